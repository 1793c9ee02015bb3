"""Callers' traces continue into the file system: TRACEPARENT in the environment, or a context a thread announced.

Real parts throughout: a real mount exporting to the rotel collector, and a
program traced with the OpenTelemetry SDK exporting to the same collector.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span

import interposer
from interposer.local.traces import SpanRecord, load_spans
from interposer.mount.child import MountProcess
from interposer.names import TRACE_CONTEXT_XATTR, TRACED_MOUNTS_VARIABLE

from .conftest import MountFactory, require_command, require_fuse, wait_for
from .otlp import Collector, ReceivedSpan, run_collector
from .test_tracing import by_name, settled, write_config
from .traced_app import SERVICE


@pytest.fixture
def collector(scratch: Path) -> Iterator[Collector]:
    """The collector both the mount and the traced program export to."""
    yield from run_collector(scratch)


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
WRITE = "import sys\nfor name in sys.argv[1:]:\n    open(name, 'w').write('x')\n"


def traceparent(trace_id: str = TRACE, span_id: str = SPAN, flags: str = "01") -> str:
    return f"00-{trace_id}-{span_id}-{flags}"


def run_child(environment: dict[str, str], *paths: Path, script: str = WRITE) -> None:
    """A child process that knows nothing of tracing: only its environment carries the context."""
    subprocess.run([sys.executable, "-c", script, *map(str, paths)], env={**os.environ, **environment}, check=True)


def file_session(spans: list[ReceivedSpan], path: str) -> ReceivedSpan:
    (session,) = [s for s in by_name(spans, "fuse.file") if s.attributes["file.path"] == path]
    return session


def traced_mount(mount_factory: MountFactory, collector: Collector, scratch: Path, config: str = "") -> MountProcess:
    """A mount exporting to the collector, with an optional config file."""
    args = ["--config", write_config(scratch, config)] if config else []
    return mount_factory(args=args, env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint})


def test_a_traced_programs_file_io_continues_its_trace(
    mount_factory: MountFactory, collector: Collector, scratch: Path
) -> None:
    mount = traced_mount(mount_factory, collector, scratch)
    app = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("traced_app.py")), str(mount.mountpoint)],
        env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    ids = json.loads(app.stdout)
    mount.stop()
    spans = settled(collector, mount, lambda s: len(by_name(s, "fuse.file")) == 2)
    app_spans = {s.name: s for s in collector.traces.snapshot() if s.resource.get("service.name") == SERVICE}
    assert {"request", "child-process", "thread-io"} <= set(app_spans)
    assert app_spans["child-process"].parent_id == app_spans["request"].span_id == ids["request"]
    assert app_spans["thread-io"].span_id == ids["thread_io"]

    # Standard propagation: the child's handle session is a child of the span in its TRACEPARENT.
    from_child = file_session(spans, "/from-child")
    assert (from_child.trace_id, from_child.parent_id) == (ids["trace"], ids["child_process"])
    writes = [s for s in spans if s.parent_id == from_child.span_id]
    assert {s.name for s in writes} >= {"fuse.create", "fuse.write", "fuse.release"}
    assert all(s.trace_id == ids["trace"] for s in writes)

    # Dynamic propagation: the thread's session and its handle-less operations are children of its span.
    from_thread = file_session(spans, "/from-thread")
    assert (from_thread.trace_id, from_thread.parent_id) == (ids["trace"], ids["thread_io"])
    # FUSE reports the calling thread, not the process: the announcement was keyed by the thread's id.
    assert from_thread.attributes["process.pid"] == ids["thread_tid"] != ids["pid"]
    in_block = [
        s
        for s in by_name(spans, "fuse.activity")
        if s.parent_id == ids["thread_io"] and s.attributes["process.pid"] == ids["thread_tid"]
    ]
    assert in_block, "the thread's handle-less operations in the block form an activity under its span"
    assert all(s.trace_id == ids["trace"] for s in in_block)

    # After the block the thread's operations start traces of their own again.
    (after,) = [s for s in by_name(spans, "fuse.lookup") if s.attributes["file.path"] == "/after-the-block"]
    assert after.trace_id != ids["trace"]


def test_a_malformed_traceparent_is_counted_and_harmless(
    mount_factory: MountFactory, collector: Collector, scratch: Path
) -> None:
    mount = traced_mount(mount_factory, collector, scratch)
    paths = [mount.mountpoint / f"bad-{index}" for index in range(5)]
    run_child({"TRACEPARENT": "00-not-a-trace-context-01", "TRACESTATE": "x"}, *paths)
    assert all(path.read_text() == "x" for path in paths), "the I/O is untouched"
    contexts = mount.status()["tracing"]["trace_contexts"]
    assert contexts["trace_context_malformed"] == 1, "one process, five opens: its environment is read once"
    with pytest.raises(OSError) as refused:
        os.setxattr(mount.mountpoint, TRACE_CONTEXT_XATTR, b"00-zz-01")
    assert refused.value.errno == errno.EINVAL
    assert mount.status()["tracing"]["trace_contexts"]["trace_context_malformed"] == 2
    mount.stop()
    spans = settled(collector, mount, lambda s: len(by_name(s, "fuse.file")) >= 10)
    sessions = [s for s in by_name(spans, "fuse.file") if s.attributes["file.path"].startswith("/bad-")]
    assert len([s for s in sessions if "fuse.session.ops.create" in s.attributes]) == 5, "the child's five"
    assert all(s.parent_id == "" for s in sessions), "no valid context: the sessions start traces of their own"


def test_sampling_follows_the_parent_and_errors_are_always_kept(
    mount_factory: MountFactory, collector: Collector, scratch: Path
) -> None:
    keep_all = traced_mount(mount_factory, collector, scratch, "tracing:\n  sample_ratio: 1\n")
    keep_none = traced_mount(mount_factory, collector, scratch, "tracing:\n  sample_ratio: 0\n")
    unsampled = traceparent(span_id="1111111111111111", flags="00")
    (keep_all.backing / "gone").mkdir()  # not empty: removing it through the mount is a real failure
    (keep_all.backing / "gone" / "file").write_bytes(b"")
    refused = (
        "import errno,os,sys\nopen(sys.argv[1], 'w').write('x')\n"
        "try:\n    os.rmdir(sys.argv[2])\nexcept OSError as e:\n    assert e.errno == errno.ENOTEMPTY\n"
        "else:\n    raise SystemExit('removed a directory that is not empty')\n"
    )
    run_child({"TRACEPARENT": unsampled}, keep_all.mountpoint / "quiet", keep_all.mountpoint / "gone", script=refused)
    run_child({"TRACEPARENT": traceparent()}, keep_none.mountpoint / "kept")
    keep_all.stop()
    keep_none.stop()

    # A sampled parent keeps its file spans even at a ratio of 0.
    kept = settled(collector, keep_none, lambda s: any(x.name == "fuse.file" for x in s))
    session = file_session(kept, "/kept")
    assert (session.trace_id, session.parent_id) == (TRACE, SPAN)
    assert {s.name for s in kept if s.parent_id == session.span_id} >= {"fuse.create", "fuse.write"}

    # An unsampled parent drops them even at a ratio of 1, but its errors are kept, in its trace.
    spans = settled(collector, keep_all, lambda s: any(x.error and x.attributes.get("file.path") == "/gone" for x in s))
    assert not by_name(spans, "fuse.file")
    assert not [s for s in spans if not s.error and s.name != "fuse.activity"], "only errors and their parent"
    (error,) = [s for s in spans if s.error and s.attributes.get("file.path") == "/gone"]
    assert (error.name, error.attributes["error.type"]) == ("fuse.rmdir", "ENOTEMPTY")
    assert error.trace_id == TRACE
    (activity,) = [s for s in spans if s.span_id == error.parent_id]
    assert (activity.name, activity.parent_id) == ("fuse.activity", "1111111111111111")


def test_the_reserved_xattr_is_hidden_kept_from_the_backing_directory_and_refused_across_processes(
    mount_factory: MountFactory, collector: Collector, scratch: Path
) -> None:
    mount = traced_mount(mount_factory, collector, scratch)
    root, name = mount.mountpoint, TRACE_CONTEXT_XATTR
    (root / "dir").mkdir()
    os.setxattr(root, "user.ordinary", b"kept")
    os.setxattr(root, name, traceparent().encode())
    assert os.getxattr(root, name) == traceparent().encode()
    assert os.listxattr(root) == ["user.ordinary"], "the reserved name is never listed"
    assert os.listxattr(mount.backing) == ["user.ordinary"], "nor does it reach the backing directory"
    for path, code in ((root / "dir", errno.EPERM), (root, errno.EINVAL)):
        with pytest.raises(OSError) as refused:
            os.setxattr(path, name if path != root else name + ".x", traceparent().encode())
        assert refused.value.errno == code

    # Announcing for another thread of the same process is allowed ...
    ready, done = threading.Event(), threading.Event()
    tids: list[int] = []

    def other_thread() -> None:
        tids.append(threading.get_native_id())
        ready.set()
        done.wait(30)

    worker = threading.Thread(target=other_thread)
    worker.start()
    try:
        assert ready.wait(30)
        for_worker = f"{name}.{tids[0]}"
        os.setxattr(root, for_worker, traceparent(span_id="2222222222222222").encode())
        assert os.getxattr(root, for_worker) == traceparent(span_id="2222222222222222").encode()
        # ... and refused for a thread of another process, whether to announce, read or clear.
        for call in ("setxattr(r, n, b'" + traceparent() + "')", "getxattr(r, n)", "removexattr(r, n)"):
            probe = f"import os,sys\nr, n = sys.argv[1:]\ntry:\n os.{call}\nexcept OSError as e:\n sys.exit(e.errno)\n"
            child = subprocess.run([sys.executable, "-c", probe, str(root), for_worker], check=False)
            assert child.returncode == errno.EPERM, call
        assert os.getxattr(root, for_worker) == traceparent(span_id="2222222222222222").encode()
    finally:
        done.set()
        worker.join()

    os.removexattr(root, name)
    with pytest.raises(OSError) as cleared:
        os.getxattr(root, name)
    assert cleared.value.errno == errno.ENODATA
    with pytest.raises(OSError) as absent:
        os.getxattr(mount.backing, name)
    assert absent.value.errno == errno.ENODATA


def test_the_context_cache_is_bounded_and_each_process_keeps_its_own_trace(
    mount_factory: MountFactory, collector: Collector, scratch: Path
) -> None:
    mount = traced_mount(mount_factory, collector, scratch, "tracing:\n  context_cache_size: 2\n")
    span_ids = [f"{index + 1:016x}" for index in range(6)]
    for index, span_id in enumerate(span_ids):
        run_child(
            {"TRACEPARENT": traceparent(span_id=span_id)}, *(mount.mountpoint / f"p{index}-{n}" for n in range(3))
        )
    contexts = mount.status()["tracing"]["trace_contexts"]
    assert contexts["processes_cached"] <= 2
    assert contexts["environments_read"] == 6, "one read per process, however many files it opened"
    mount.stop()
    spans = settled(collector, mount, lambda s: len(by_name(s, "fuse.file")) >= 18)
    for index, span_id in enumerate(span_ids):
        sessions = [s for s in by_name(spans, "fuse.file") if s.attributes["file.path"].startswith(f"/p{index}-")]
        assert len(sessions) == 3
        assert {(s.trace_id, s.parent_id) for s in sessions} == {(TRACE, span_id)}


def test_callers_the_mount_cannot_see_start_traces_of_their_own(scratch: Path) -> None:
    """A mount in a pid namespace of its own (a pod without hostPID) gets pid 0 for callers outside it."""
    require_fuse()
    unshare = require_command("unshare")
    backing, mountpoint, span_file = scratch / "backing", scratch / "mnt", scratch / "spans.jsonl"
    backing.mkdir()
    mountpoint.mkdir()
    config = write_config(scratch, f"tracing:\n  file: {span_file}\n  export_delay: 0.1\n")
    mount = MountProcess(backing, mountpoint)
    command = [unshare, "--pid", "--fork", sys.executable, "-m", "interposer", "mount", "--config", config]
    with (scratch / "mount.log").open("wb") as log:
        mount.process = subprocess.Popen([*command, str(backing), str(mountpoint)], stdout=log, stderr=log)
    try:
        mount.wait_ready()
        run_child({"TRACEPARENT": traceparent()}, mountpoint / "outside")
        assert (mountpoint / "outside").read_text() == "x", "the I/O works as ever"

        def sessions() -> list[SpanRecord]:
            return [s for s in load_spans(span_file) if s.name == "fuse.file" and s.path == "/outside"]

        wait_for(lambda: len(sessions()) == 2, what="the write's and the read's sessions in the span file")
        assert all(s.parent_id == "" and s.trace_id != TRACE for s in sessions())
        assert all(s.attributes["process.pid"] == 0 for s in sessions()), "FUSE reports no pid for them"
    finally:
        unshared = mount.process.pid
        for server in Path(f"/proc/{unshared}/task/{unshared}/children").read_text().split():
            os.kill(int(server), signal.SIGTERM)  # the mount, pid 1 of its namespace; unshare exits with it
        assert mount.stop() == 0


def test_traced_io_nests_needs_a_span_and_never_writes_to_an_ordinary_directory(
    mounted: MountProcess, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracer = TracerProvider().get_tracer("test")
    root, ordinary = mounted.mountpoint, scratch / "ordinary"
    ordinary.mkdir()

    def announced() -> str | None:
        try:
            return os.getxattr(root, TRACE_CONTEXT_XATTR).decode()
        except OSError as exc:
            if exc.errno != errno.ENODATA:
                raise
            return None

    def context_of(span: Span) -> str:
        return traceparent(f"{span.get_span_context().trace_id:032x}", f"{span.get_span_context().span_id:016x}")

    with interposer.traced_io(root):
        assert announced() is None, "no current span: nothing to announce"
    monkeypatch.setenv(TRACED_MOUNTS_VARIABLE, f"{ordinary}{os.pathsep}{root}")
    with tracer.start_as_current_span("outer") as outer, interposer.traced_io():
        assert announced() == context_of(outer)
        with tracer.start_as_current_span("inner") as inner, interposer.traced_io(root):
            assert announced() == context_of(inner)
        assert announced() == context_of(outer), "leaving the inner block restores the outer context"
    assert announced() is None
    assert os.listxattr(ordinary) == [], "not an interposer mount: skipped"
