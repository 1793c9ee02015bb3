"""Each layer in the real pipeline, without a mount: what it does, and what it tells the layers outside it."""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, StatusCode

from interposer.layers.crash.journal import CrashJournal
from interposer.layers.faults.layer import FaultLayer
from interposer.layers.metrics.layer import MetricsLayer
from interposer.layers.throttle.layer import ThrottleLayer
from interposer.layers.tracing.layer import TracingLayer
from interposer.layers.tracing.records import to_span
from interposer.mount.registry import REGISTRY
from interposer.names import (
    ATTR_ERROR_TYPE,
    ATTR_FAULT,
    ATTR_FILE_PATH,
    ATTR_OPERATION,
    ATTR_SESSION_ERRORS,
    ATTR_THROTTLE_LIMIT,
    EVENT_FAULT,
    EVENT_THROTTLE,
    HANDLE_FILE,
    SPAN_ACTIVITY,
    SPAN_FILE_SESSION,
    TRACE_CONTEXT_XATTR,
    OpName,
)
from interposer.telemetry.spanfile import SpanFile

from ..layers.seen import SeenRequests
from .conftest import StackFactory
from .stack import CALLER, Caller

ROOT = pyfuse3.ROOT_INODE


def _rule(action: dict[str, Any], **match: Any) -> dict[str, Any]:
    return {"rules": [{"match": match, "action": action}]}


def test_the_registry_builds_every_layer_in_its_order_with_the_journal_innermost(make_stack: StackFactory) -> None:
    stack = make_stack(
        {
            "throttle": {"metadata_iops": {"rate": 1000, "burst": 1000}},
            "faults": _rule({"errno": "EIO"}, operations=["mknod"]),
            "crash": {"enabled": True},
            "extra_layers": ["tests.layers.seen:SeenRequests"],
        }
    )
    kinds = [TracingLayer, MetricsLayer, ThrottleLayer, FaultLayer, SeenRequests, CrashJournal]
    assert [type(layer) for layer in stack.pipeline.layers] == kinds
    assert list(stack.layers.status()["layers"]) == [kind.name for kind in REGISTRY]
    assert set(stack.layers.status()["layers"].values()) == {"on"}


def test_tracing_groups_a_handles_operations_under_its_file_span(make_stack: StackFactory) -> None:
    stack = make_stack()
    fh, _ = stack.create(b"traced")
    stack.run(lambda: stack.fs.write(fh, 0, b"abc"))
    stack.run(lambda: stack.fs.release(fh))
    spans = {span.name: span for span in stack.sink.spans()}
    parent = spans[SPAN_FILE_SESSION]
    for name in ("fuse.create", "fuse.write", "fuse.release"):
        assert spans[name].parent_id == parent.span_id
        assert spans[name].attributes[ATTR_FILE_PATH] == "/traced"
    assert parent.attributes["fuse.session.bytes_written"] == 3


def test_operations_are_server_spans_and_a_parent_is_no_error_for_its_childrens_failures(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    """A request the kernel brings for another process, which waits for the answer, is what OpenTelemetry calls
    a server span (and what Jaeger's Monitor tab shows by default); the parent that groups them serves nothing
    and fails with none of them: its count of failures is an attribute, not an error status."""
    stack = make_stack({"tracing": {"always_keep": ["errors", "negative_lookups"]}})
    fh, _ = stack.create(b"traced")
    stack.run(lambda: stack.fs.release(fh))
    assert stack.errno_of(lambda: stack.fs.lookup(ROOT, b"missing", CALLER)) == errno.ENOENT
    stack.layers.close()  # ends the parent spans
    spans = stack.sink.spans()
    parents = [span for span in spans if span.name in (SPAN_FILE_SESSION, SPAN_ACTIVITY)]
    operations = [span for span in spans if span not in parents]
    assert {span.name for span in parents} == {SPAN_FILE_SESSION, SPAN_ACTIVITY}
    assert "fuse.lookup" in {span.name for span in operations}
    assert {span.kind for span in operations} == {SpanKind.SERVER}
    assert {(span.kind, span.failure) for span in parents} == {(SpanKind.INTERNAL, None)}
    assert sum(span.attributes[ATTR_SESSION_ERRORS] for span in parents) == 1
    resource = Resource.create({})
    scope = InstrumentationScope("test")
    assert {to_span(span, resource, scope).kind for span in operations} == {SpanKind.SERVER}
    assert {to_span(span, resource, scope).status.status_code for span in parents} == {StatusCode.UNSET}
    file = SpanFile(tmp_path / "spans.jsonl", 1 << 20, {}, ("test", "1"))
    file.write(spans)
    [line] = (tmp_path / "spans.jsonl").read_text().splitlines()
    [written] = json.loads(line)["resourceSpans"][0]["scopeSpans"]
    otlp_kinds = {span["name"]: span["kind"] for span in written["spans"]}
    assert otlp_kinds["fuse.lookup"] == 2, "OTLP's SPAN_KIND_SERVER"
    assert otlp_kinds[SPAN_ACTIVITY] == 1, "OTLP's SPAN_KIND_INTERNAL"


@pytest.mark.parametrize(
    ("always_keep", "kept"),
    [
        # the default: errors and faults, not the expected failures (a lookup that found nothing, the kernel's
        # security.capability probe before a write)
        (None, {"fuse.rmdir", "fuse.mkdir"}),
        (["errors", "faults", "negative_lookups"], {"fuse.lookup", "fuse.rmdir", "fuse.mkdir"}),
        (["negative_lookups"], {"fuse.lookup"}),
        ([], set()),
    ],
)
def test_sampling_keeps_what_always_keep_names(
    make_stack: StackFactory, always_keep: list[str] | None, kept: set[str]
) -> None:
    tracing: dict[str, Any] = {} if always_keep is None else {"always_keep": always_keep}
    faults = _rule({"errno": "ENOSPC"}, operations=["mkdir"])
    stack = make_stack({"tracing": tracing, "faults": faults}, sample_ratio=0.0)
    os.mkdir(stack.backing / "full")
    (stack.backing / "full" / "file").write_bytes(b"")
    assert stack.errno_of(lambda: stack.fs.lookup(ROOT, b"missing", CALLER)) == errno.ENOENT
    probed = stack.run(lambda: stack.fs.lookup(ROOT, b"full", CALLER)).st_ino
    assert stack.errno_of(lambda: stack.fs.getxattr(probed, b"security.capability", CALLER)) == errno.ENODATA
    assert stack.errno_of(lambda: stack.fs.rmdir(ROOT, b"full", CALLER)) == errno.ENOTEMPTY
    assert stack.errno_of(lambda: stack.fs.mkdir(ROOT, b"new", 0o755, CALLER)) == errno.ENOSPC
    operations = {span.name for span in stack.sink.spans() if span.attributes.get(ATTR_OPERATION)}
    assert operations == kept
    # A lookup that found nothing is an error for metrics whatever sampling keeps.
    failed = frozenset({ATTR_OPERATION: "lookup", ATTR_ERROR_TYPE: "ENOENT"}.items())
    assert sum(stack.duration.series[failed].counts) == 1


def test_metrics_count_bytes_moved_handles_and_failures(make_stack: StackFactory) -> None:
    stack = make_stack()
    fh, _ = stack.create(b"counted")
    stack.run(lambda: stack.fs.write(fh, 0, b"12345"))
    assert stack.run(lambda: stack.fs.read(fh, 3, 100)) == b"45"
    assert stack.metrics.handles[HANDLE_FILE] == 1
    stack.run(lambda: stack.fs.release(fh))
    assert stack.metrics.bytes == {"read": 2, "write": 5}
    assert stack.metrics.handles[HANDLE_FILE] == 0
    assert stack.errno_of(lambda: stack.fs.lookup(ROOT, b"missing", CALLER)) == errno.ENOENT
    failed = frozenset({ATTR_OPERATION: "lookup", ATTR_ERROR_TYPE: "ENOENT"}.items())
    assert sum(stack.duration.series[failed].counts) == 1


def test_throttle_notes_its_wait_and_fail_mode_refuses_at_once(make_stack: StackFactory) -> None:
    stack = make_stack({"throttle": {"metadata_iops": {"rate": 20, "burst": 1}}})
    for _ in range(3):
        stack.run(lambda: stack.fs.getattr(ROOT, CALLER))
    waits = [event for span in stack.sink.spans() for event in span.events if event[0] == EVENT_THROTTLE]
    assert waits, "the second and third getattr waited for a token"
    assert all(event[1][ATTR_THROTTLE_LIMIT] == "metadata_iops" for event in waits)
    stack.layers.replace_sections({"throttle": {"mode": "fail", "metadata_iops": {"rate": 0.001, "burst": 1}}})
    stack.run(lambda: stack.fs.getattr(ROOT, CALLER))
    assert stack.errno_of(lambda: stack.fs.getattr(ROOT, CALLER)) == errno.EAGAIN
    assert stack.layers.throttle is not None
    assert stack.layers.throttle.rejected == 1


def test_faults_change_copies_never_the_request_or_the_backends_reply(make_stack: StackFactory) -> None:
    stack = make_stack({"extra_layers": ["tests.layers.seen:SeenRequests"]})
    (seen,) = stack.layers.extra
    assert isinstance(seen, SeenRequests)
    fh, inode = stack.create(b"victim")
    stack.run(lambda: stack.fs.write(fh, 0, b"0123456789"))
    stack.layers.replace_sections({"faults": _rule({"short": 0.5}, operations=["read", "write"])})
    assert stack.run(lambda: stack.fs.read(fh, 0, 10)) == b"01234"
    assert stack.run(lambda: stack.fs.write(fh, 0, b"abcdefgh")) == 4
    request, reply = seen.seen[-1]
    assert (request.data, reply.transferred) == (b"abcd", 4)
    assert stack.metrics.faults[("short", OpName.WRITE)] == 1

    stack.layers.replace_sections(
        {"faults": _rule({"corrupt": {"mode": "zero", "max_bytes": 10}}, operations=["read"])}
    )
    assert stack.run(lambda: stack.fs.read(fh, 0, 10)) == bytes(10)
    assert seen.seen[-1][1].value == b"abcd456789"  # the backend's reply is untouched; the caller got a copy

    stack.layers.replace_sections({"faults": _rule({"attributes": {"size": 12345}}, operations=["getattr"])})
    assert stack.run(lambda: stack.fs.getattr(inode, CALLER)).st_size == 12345
    assert seen.seen[-1][1].value.st_size == 10
    events = [event for span in stack.sink.spans() for event in span.events if event[0] == EVENT_FAULT]
    assert [event[1][ATTR_FAULT] for event in events] == ["short", "short", "corrupt", "attributes"]


def test_an_injected_errno_reaches_tracing_and_metrics_through_the_notes(make_stack: StackFactory) -> None:
    stack = make_stack({"faults": _rule({"errno": "ENOSPC"}, operations=["mkdir"])})
    assert stack.errno_of(lambda: stack.fs.mkdir(ROOT, b"full", 0o755, CALLER)) == errno.ENOSPC
    span = next(span for span in stack.sink.spans() if span.name == "fuse.mkdir")
    assert span.attributes[ATTR_FAULT] == "errno"
    assert stack.metrics.faults == {("errno", OpName.MKDIR): 1}


def test_the_crash_journal_drops_what_was_not_synced(make_stack: StackFactory) -> None:
    stack = make_stack({"crash": {"enabled": True}})
    fh, _ = stack.create(b"durable")
    stack.run(lambda: stack.fs.write(fh, 0, b"synced"))
    stack.run(lambda: stack.fs.fsync(fh, False))
    stack.run(lambda: stack.fs.write(fh, 6, b" and lost"))
    assert stack.run(stack.layers.crash) == {"files": 1, "changes": 1, "bytes": 0}
    with open(stack.backend_path(b"durable"), "rb") as file:
        assert file.read() == b"synced"
    stack.layers.replace_sections({"crash": {"enabled": False}})
    assert stack.layers.journal is None


def test_a_defect_in_a_layer_is_eio_for_that_request_only(make_stack: StackFactory) -> None:
    stack = make_stack({"extra_layers": ["tests.layers.exploding:ExplodingLayer"]})
    assert stack.errno_of(lambda: stack.fs.mkdir(ROOT, b"boom", 0o755, CALLER)) == errno.EIO
    assert stack.fs.internal_errors == 1
    assert stack.errno_of(lambda: stack.fs.mkdir(ROOT, b"fine", 0o755, CALLER)) == 0
    assert os.path.isdir(stack.backend_path(b"fine"))


def test_a_switched_off_layer_is_out_of_the_chain_and_keeps_its_state(make_stack: StackFactory) -> None:
    stack = make_stack({"faults": _rule({"errno": "EIO"}, operations=["getattr"])})
    assert stack.errno_of(lambda: stack.fs.getattr(ROOT, CALLER)) == errno.EIO
    faults = stack.layers.faults
    stack.layers.switch("faults", False)
    assert stack.errno_of(lambda: stack.fs.getattr(ROOT, CALLER)) == 0
    stack.layers.switch("faults", True)
    assert stack.layers.faults is faults
    assert stack.errno_of(lambda: stack.fs.getattr(ROOT, CALLER)) == errno.EIO


def test_the_trace_context_xattr_is_answered_by_tracing_and_never_reaches_the_backend(
    make_stack: StackFactory,
) -> None:
    stack = make_stack()
    root, name = str(stack.backing), TRACE_CONTEXT_XATTR.encode()
    me: Any = Caller(pid=threading.get_native_id())  # an announcement is keyed by a live thread
    os.setxattr(root, name, b"set from outside")
    context = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    stack.run(lambda: stack.fs.setxattr(ROOT, name, context, me))
    assert stack.run(lambda: stack.fs.getxattr(ROOT, name, me)) == context
    assert stack.errno_of(lambda: stack.fs.setxattr(ROOT, name, b"nonsense", me)) == errno.EINVAL
    stack.run(lambda: stack.fs.removexattr(ROOT, name, me))
    assert stack.errno_of(lambda: stack.fs.getxattr(ROOT, name, me)) == errno.ENODATA
    assert stack.sink.records == [], "the announcements are neither spans ..."
    assert sum(sum(series.counts) for series in stack.duration.series.values()) == 0, "... nor measurements"
    assert name not in stack.run(lambda: stack.fs.listxattr(ROOT, me))
    assert os.getxattr(root, name) == b"set from outside", "the backing directory's own is untouched"

    stack.layers.switch("tracing", False)
    assert stack.errno_of(lambda: stack.fs.setxattr(ROOT, name, context, me)) == errno.ENOTSUP
    assert stack.errno_of(lambda: stack.fs.getxattr(ROOT, name, me)) == errno.ENOTSUP
    assert name not in stack.run(lambda: stack.fs.listxattr(ROOT, me))
    assert os.getxattr(root, name) == b"set from outside"
