"""Span records: what the request thread hands over instead of SDK spans, and how they become spans.

Building an SDK span costs the request thread about 7 µs (an attribute dict,
a ``ReadableSpan``, its contexts and status), and exporting it in a thread of
the same process costs more through the GIL: the exporter thread holds the
GIL whenever the request thread comes back from a syscall.  So the request
thread builds only a flat tuple of plain values, which ``marshal`` encodes
in well under a microsecond, and the export process (``telemetry.export_process``)
turns it into a span with the attributes the issue asks for
(docs/performance.md).

The layouts are positional, for speed; ``operation_record`` and
``session_record`` are the only writers, ``span_data`` the only reader.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ...errnos import errno_symbol
from ...names import (
    ATTR_COMMAND,
    ATTR_DELETED,
    ATTR_ERRNO,
    ATTR_ERROR_TYPE,
    ATTR_FAULT,
    ATTR_FILE_INODE,
    ATTR_FILE_PATH,
    ATTR_GID,
    ATTR_HANDLE,
    ATTR_NEW_PATH,
    ATTR_OFFSET,
    ATTR_OPERATION,
    ATTR_OTHER_PATHS,
    ATTR_PID,
    ATTR_SIZE,
    ATTR_TRANSFERRED,
    ATTR_UID,
    SPAN_NAMES,
    OpName,
)
from ...pathnames import DELETED_SUFFIX

OPERATION = 0
"""Record kind: one operation's span."""
SESSION = 1
"""Record kind: a parent span (file, directory or activity segment), with its summary attributes."""

SIZED = frozenset({OpName.READ, OpName.WRITE, OpName.SETATTR, OpName.SETXATTR, OpName.READDIR})
"""Operations whose span carries the requested offset and size."""

Events = list[tuple[str, dict[str, Any]]] | None
"""(name, attributes) of what happened to a request, all at its end."""

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)
_OPERATIONS = {op.value: op for op in OpName}


def operation_record(
    op: str,
    ids: tuple[int, int, int],
    times: tuple[int, int],
    target: tuple[str, int, int, int, int, int],
    paths: tuple[str | None, list[str] | None],
    caller: tuple[int, int, int, str],
    failure: tuple[int, str | None, str | None],
    fault: str | None,
    events: Events,
) -> tuple[Any, ...]:
    """An operation's record.

    ``ids`` (trace, span, parent span); ``times`` (start, end) in ns since the
    epoch; ``target`` (path, inode, handle, offset, size, bytes transferred);
    ``paths`` (new path of a rename or link, other paths of a linked inode);
    ``caller`` (pid, uid, gid, command); ``failure`` (errno, error type, message),
    errno 0 on success, error type None for an OSError (the errno's symbol).
    """
    return (OPERATION, op, ids, times, target, paths, caller, failure, fault, events)


def session_record(
    name: str,
    ids: tuple[int, int],
    link: tuple[int, int] | None,
    times: tuple[int, int],
    attributes: dict[str, Any],
    parent: int,
) -> tuple[Any, ...]:
    """A parent span segment's record: ``ids`` (trace, span), the previous segment as ``link``.

    ``parent``: the span id of the caller's span that it continues (``propagation``), 0 for none.
    """
    return (SESSION, name, ids, link, times, attributes, parent)


class SpanData(NamedTuple):
    """A finished span in plain values: what both the span file and the SDK's exporters are fed from."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int
    """0 for a root span."""
    start: int
    end: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    """(name, attributes), all at the span's end."""
    link: tuple[int, int] | None
    """(trace, span) ids of the previous segment of the same parent span."""
    failure: str | None
    """The status message of a failed span; None: status unset."""
    kind: SpanKind = SpanKind.INTERNAL
    """SERVER for an operation: it covers the handling of a request that another process (through the kernel)
    waits for, the OpenTelemetry definition of a server span, and what Jaeger's Monitor tab shows by default.
    INTERNAL for a parent span, which groups requests and serves none."""


def span_data(record: tuple[Any, ...]) -> SpanData:
    """The span a record stands for, with the attributes the tracing issue asks for (docs/tracing.md)."""
    if record[0] == SESSION:
        # No error status, whatever its children did: a handle's life or a process's activity does not fail
        # when one of its requests does (a lookup's ENOENT), and a status would make every busy parent an error
        # in Jaeger's Monitor tab and span metrics.  The count is its attribute fuse.session.errors.
        _kind, name, (trace_id, span_id), link, (start, end), summary, parent = record
        return SpanData(name, trace_id, span_id, parent, start, end, summary, [], link, None)
    _kind, op, (trace_id, span_id, parent_id), (start, end), target, paths, caller, error, fault, events = record
    path, inode, handle, offset, size, transferred = target
    operation = _OPERATIONS[op]
    attributes: dict[str, Any] = {ATTR_OPERATION: op, ATTR_FILE_PATH: path}
    if path.endswith(DELETED_SUFFIX):
        attributes[ATTR_DELETED] = True
    if inode:
        attributes[ATTR_FILE_INODE] = inode
    if handle >= 0:
        attributes[ATTR_HANDLE] = handle
    if operation in SIZED:
        attributes[ATTR_OFFSET] = offset
        attributes[ATTR_SIZE] = size
    if transferred:
        attributes[ATTR_TRANSFERRED] = transferred
    new_path, other_paths = paths
    if new_path is not None:
        attributes[ATTR_NEW_PATH] = new_path
    if other_paths is not None:
        attributes[ATTR_OTHER_PATHS] = other_paths
    if fault is not None:
        attributes[ATTR_FAULT] = fault
    pid, uid, gid, command = caller
    if pid:
        attributes |= {ATTR_PID: pid, ATTR_UID: uid, ATTR_GID: gid, ATTR_COMMAND: command}
    failure = None
    code, error_type, message = error
    if code:
        attributes[ATTR_ERRNO] = code
        attributes[ATTR_ERROR_TYPE] = error_type or errno_symbol(code)
        failure = message or attributes[ATTR_ERROR_TYPE]
    name = SPAN_NAMES[operation]
    return SpanData(
        name, trace_id, span_id, parent_id, start, end, attributes, events or [], None, failure, SpanKind.SERVER
    )


def to_span(data: SpanData, resource: Resource, scope: InstrumentationScope) -> ReadableSpan:
    """The SDK's span for the OTLP exporters."""
    trace_id = data.trace_id
    link = data.link
    return ReadableSpan(
        name=data.name,
        kind=data.kind,
        context=SpanContext(trace_id, data.span_id, False, _SAMPLED),
        parent=SpanContext(trace_id, data.parent_id, False, _SAMPLED) if data.parent_id else None,
        resource=resource,
        attributes=data.attributes,
        events=[Event(name, attributes, data.end) for name, attributes in data.events],
        links=() if link is None else (Link(SpanContext(link[0], link[1], False, _SAMPLED)),),
        status=_UNSET if data.failure is None else Status(StatusCode.ERROR, data.failure),
        start_time=data.start,
        end_time=data.end,
        instrumentation_scope=scope,
    )
