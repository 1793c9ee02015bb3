"""The tracing layer: a span per operation, grouped under parent spans, sampled without losing errors.

Grouping (docs/tracing.md):

* a file handle's life, ``open``/``create`` to ``release``, is a ``fuse.file``
  span whose children are the handle's operations; a directory handle's life
  is a ``fuse.directory`` span;
* operations without a handle are children of the calling process's
  ``fuse.activity`` span, which ends after ``activity_idle_gap`` of quiet;
* no parent span stays open without bound: past ``segment_max_seconds`` or
  ``segment_max_operations`` it ends with its summary so far, and the next
  child starts a new segment linked to it.  The sweeper ends idle segments,
  so a handle shows up in Jaeger while it is still open.

Sampling.  Each parent span segment is sampled (kept whole) with the
configured ratio.  An operation outside a sampled segment is still kept if it
failed or a fault was injected into it; its parent span is then created on
demand, so a kept span always has its parent.  The decision is made when the
operation ends, before anything is built: a dropped operation costs two clock
reads and a few counters.  A kept operation is handed to the batch processor as
a finished ``ReadableSpan`` of the SDK, which costs a fraction of a live span
(measured: docs/performance.md).  Parent spans too: while a segment is open
only its ids exist; the span is emitted, with its summary, when it ends.

Being the outermost layer, a span covers throttle waits and injected faults;
layers inside report those through ``op.events`` and ``op.fault``.
"""

from __future__ import annotations

import random
import time
import traceback
from collections import Counter
from typing import Any

import trio
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags

from .. import __version__
from ..config import TracingConfig
from ..errnos import errno_of, errno_symbol
from ..names import (
    ATTR_COMMAND,
    ATTR_DELETED,
    ATTR_ERRNO,
    ATTR_ERROR_TYPE,
    ATTR_FAULT,
    ATTR_FILE_INODE,
    ATTR_FILE_PATH,
    ATTR_FLAGS,
    ATTR_GID,
    ATTR_HANDLE,
    ATTR_NEW_PATH,
    ATTR_OFFSET,
    ATTR_OPERATION,
    ATTR_OTHER_PATHS,
    ATTR_PID,
    ATTR_SEGMENT,
    ATTR_SESSION_BYTES_READ,
    ATTR_SESSION_BYTES_WRITTEN,
    ATTR_SESSION_ERRORS,
    ATTR_SESSION_OPERATIONS,
    ATTR_SESSION_OPS_PREFIX,
    ATTR_SIZE,
    ATTR_TRANSFERRED,
    ATTR_UID,
    DIR_HANDLE_OPS,
    HANDLE_OPS,
    SPAN_ACTIVITY,
    SPAN_DIRECTORY_SESSION,
    SPAN_FILE_SESSION,
    SPAN_NAMES,
    OpName,
)
from ..op import Op
from ..pipeline import NextCall
from ..processes import ProcessNames

_DELETED_SUFFIX = " (deleted)"
_SIZED = frozenset({OpName.READ, OpName.WRITE, OpName.SETATTR, OpName.SETXATTR, OpName.READDIR})
_RENAMING = frozenset({OpName.RENAME, OpName.LINK})
_FILE_OPENS = frozenset({OpName.OPEN, OpName.CREATE})
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)


class Group:
    """A parent span (created when first needed) and the summary of its current segment."""

    __slots__ = (
        "bytes_read",
        "bytes_written",
        "counts",
        "errors",
        "handle",
        "inflight",
        "last_active",
        "link",
        "name",
        "opener",
        "operations",
        "pid",
        "sampled",
        "segment",
        "span_context",
        "started",
        "started_ns",
    )

    def __init__(self, name: str, pid: int, opener: Op | None) -> None:
        self.name = name
        self.pid = pid
        self.opener = opener
        self.handle = -1
        self.segment = -1
        self.span_context: SpanContext | None = None
        self.link: Link | None = None
        self.sampled = False
        self.inflight = 0
        self.last_active = self.started = 0.0
        self.started_ns = 0
        self.operations = self.errors = self.bytes_read = self.bytes_written = 0
        self.counts: Counter[str] = Counter()


class TracingLayer:
    """Outermost layer: times every operation, whatever the inner layers do to it."""

    def __init__(self, processor: SpanProcessor, resource: Resource, config: TracingConfig, ratio: float) -> None:
        self._processor = processor
        self._resource = resource
        self._scope = InstrumentationScope("interposer", __version__)
        self._ids = RandomIdGenerator()
        self._ratio = ratio
        self._idle_gap = config.activity_idle_gap
        self._max_seconds = config.segment_max_seconds
        self._max_operations = config.segment_max_operations
        self._files: dict[int, Group] = {}
        self._dirs: dict[int, Group] = {}
        self._activities: dict[int, Group] = {}
        self._commands = ProcessNames()
        self.kept = 0
        self.sampled_out = 0

    async def __call__(self, op: Op, call_next: NextCall) -> Any:
        now = time.monotonic()
        group = self._group_for(op, now)
        if group.segment < 0 or group.operations >= self._max_operations or now - group.started >= self._max_seconds:
            self._new_segment(group, now)
        group.last_active = now
        group.inflight += 1
        parent = None
        if group.sampled:  # the span will be kept: its identity exists from the start, for inner layers
            parent = self._parent_span(group)
            op.span_context = SpanContext(parent.trace_id, self._ids.generate_span_id(), False, _SAMPLED)
        start = time.time_ns()
        error: BaseException | None = None
        try:
            return await call_next(op)
        except BaseException as exc:
            error = exc
            raise
        finally:
            group.inflight -= 1
            self._finish(op, group, parent, start, time.time_ns(), error)

    # -- groups ------------------------------------------------------------------------

    def _group_for(self, op: Op, now: float) -> Group:
        name = op.name
        if name in HANDLE_OPS:
            group = self._files.get(op.fh)
            if group is not None:
                return group
        elif name in DIR_HANDLE_OPS:
            group = self._dirs.get(op.fh)
            if group is not None:
                return group
        elif name in _FILE_OPENS:
            return Group(SPAN_FILE_SESSION, op.pid, op)
        elif name is OpName.OPENDIR:
            return Group(SPAN_DIRECTORY_SESSION, op.pid, op)
        group = self._activities.get(op.pid)
        if group is not None and group.inflight == 0 and now - group.last_active > self._idle_gap:
            self._end_segment(group)
            group = None
        if group is None:
            group = Group(SPAN_ACTIVITY, op.pid, None)
            self._activities[op.pid] = group
        return group

    def _new_segment(self, group: Group, now: float) -> None:
        self._end_segment(group)
        group.segment += 1
        group.started = now
        group.started_ns = time.time_ns()
        group.sampled = random.random() < self._ratio
        if group.sampled:
            self._parent_span(group)

    def _parent_span(self, group: Group) -> SpanContext:
        """The identity of the group's span for this segment, allotted on first need.

        The span itself is emitted, finished, when the segment ends: until then
        only its ids exist, which is all its children need.
        """
        if group.span_context is None:
            ids = self._ids
            group.span_context = SpanContext(ids.generate_trace_id(), ids.generate_span_id(), False, _SAMPLED)
        return group.span_context

    def _end_segment(self, group: Group) -> None:
        context = group.span_context
        if context is not None:
            attributes: dict[str, Any] = {ATTR_PID: group.pid, ATTR_COMMAND: self._commands[group.pid]}
            opener = group.opener
            if opener is not None:
                attributes |= {
                    ATTR_FILE_PATH: opener.path,
                    ATTR_FILE_INODE: opener.inode,
                    ATTR_UID: opener.uid,
                    ATTR_FLAGS: opener.flags,
                }
                if group.handle >= 0:
                    attributes[ATTR_HANDLE] = group.handle
            attributes |= {
                ATTR_SEGMENT: group.segment,
                ATTR_SESSION_OPERATIONS: group.operations,
                ATTR_SESSION_ERRORS: group.errors,
                ATTR_SESSION_BYTES_READ: group.bytes_read,
                ATTR_SESSION_BYTES_WRITTEN: group.bytes_written,
            }
            for kind, count in group.counts.items():
                attributes[ATTR_SESSION_OPS_PREFIX + kind] = count
            failed = Status(StatusCode.ERROR, f"{group.errors} failed operations") if group.errors else _UNSET
            self._processor.on_end(
                ReadableSpan(
                    name=group.name,
                    context=context,
                    resource=self._resource,
                    attributes=attributes,
                    links=() if group.link is None else (group.link,),
                    status=failed,
                    start_time=group.started_ns,
                    end_time=time.time_ns(),
                    instrumentation_scope=self._scope,
                )
            )
            group.link = Link(context)
            group.span_context = None
        group.operations = group.errors = group.bytes_read = group.bytes_written = 0
        group.counts = Counter()

    # -- operations --------------------------------------------------------------------

    def _finish(
        self, op: Op, group: Group, parent: SpanContext | None, start: int, end: int, error: BaseException | None
    ) -> None:
        """Account the operation to its group and emit its span if kept.

        ``parent`` is the segment the operation started in, if that was sampled;
        the group may have moved on to a new segment since.
        """
        name = op.name
        group.operations += 1
        group.counts[name] += 1
        if error is not None:
            group.errors += 1
        elif name is OpName.READ:
            group.bytes_read += op.transferred
        elif name is OpName.WRITE:
            group.bytes_written += op.transferred
        if parent is not None or group.sampled or error is not None or op.fault is not None:
            self._emit(op, group, parent or self._parent_span(group), start, end, error)
            self.kept += 1
        else:
            self.sampled_out += 1
        if name in _FILE_OPENS:
            self._opened(self._files, op, group, error)
        elif name is OpName.OPENDIR:
            self._opened(self._dirs, op, group, error)
        elif name is OpName.RELEASE:
            self._closed(self._files, op.fh)
        elif name is OpName.RELEASEDIR:
            self._closed(self._dirs, op.fh)

    def _emit(
        self, op: Op, group: Group, parent: SpanContext, start: int, end: int, error: BaseException | None
    ) -> None:
        attributes = self._attributes(op, group)
        status = _UNSET
        events = [Event(event, event_attributes, end) for event, event_attributes in op.events or ()]
        if error is not None:
            status = _failure(error, attributes, events, end)
        context = op.span_context or SpanContext(parent.trace_id, self._ids.generate_span_id(), False, _SAMPLED)
        span = ReadableSpan(
            name=SPAN_NAMES[op.name],
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            events=events,
            status=status,
            start_time=start,
            end_time=end,
            instrumentation_scope=self._scope,
        )
        self._processor.on_end(span)

    def _attributes(self, op: Op, group: Group) -> dict[str, Any]:
        name = op.name
        path = op.path
        attributes: dict[str, Any] = {ATTR_OPERATION: name.value, ATTR_FILE_PATH: path}
        if path.endswith(_DELETED_SUFFIX):
            attributes[ATTR_DELETED] = True
        if op.inode:
            attributes[ATTR_FILE_INODE] = op.inode
        if op.fh >= 0:
            attributes[ATTR_HANDLE] = op.fh
        if name in _SIZED:
            attributes[ATTR_OFFSET] = op.offset
            attributes[ATTR_SIZE] = op.size
        if op.transferred:
            attributes[ATTR_TRANSFERRED] = op.transferred
        if name in _RENAMING:
            attributes[ATTR_NEW_PATH] = op.new_path
            if name is OpName.LINK:
                attributes[ATTR_OTHER_PATHS] = op.resolver.paths_of_inode(op.inode)
        if op.fault is not None:
            attributes[ATTR_FAULT] = op.fault
        # pyfuse3 gives handle operations no caller: they belong to the process that opened the handle.
        caller = op if op.pid or group.opener is None else group.opener
        if caller.pid:
            attributes[ATTR_PID] = caller.pid
            attributes[ATTR_UID] = caller.uid
            attributes[ATTR_GID] = caller.gid
            attributes[ATTR_COMMAND] = self._commands[caller.pid]
        return attributes

    def _opened(self, table: dict[int, Group], op: Op, group: Group, error: BaseException | None) -> None:
        if error is not None:
            self._end_segment(group)
            return
        group.handle = op.fh
        table[op.fh] = group

    def _closed(self, table: dict[int, Group], fh: int) -> None:
        group = table.pop(fh, None)
        if group is not None:
            self._end_segment(group)

    # -- lifetime ----------------------------------------------------------------------

    async def sweep(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """End idle activity spans and over-age segments, so nothing stays open without bound."""
        task_status.started()
        interval = min(self._idle_gap, self._max_seconds) / 2
        while True:
            await trio.sleep(interval)
            now = time.monotonic()
            for pid, group in list(self._activities.items()):
                if group.inflight == 0 and now - group.last_active > self._idle_gap:
                    self._end_segment(group)
                    del self._activities[pid]
            for group in (*self._files.values(), *self._dirs.values()):
                if group.span_context is not None and group.inflight == 0 and now - group.started >= self._max_seconds:
                    self._end_segment(group)  # the handle's next operation starts the next segment

    def close(self) -> None:
        """End every open parent span (the mount is going away)."""
        for table in (self._files, self._dirs, self._activities):
            for group in table.values():
                self._end_segment(group)
            table.clear()


def _failure(error: BaseException, attributes: dict[str, Any], events: list[Event], when: int) -> Status:
    """Record a failure on a span's attributes (and, for a defect, an exception event); return its status."""
    attributes[ATTR_ERRNO] = errno_of(error)
    if isinstance(error, OSError):
        attributes[ATTR_ERROR_TYPE] = errno_symbol(attributes[ATTR_ERRNO])
        return Status(StatusCode.ERROR, error.strerror or attributes[ATTR_ERROR_TYPE])
    attributes[ATTR_ERROR_TYPE] = type(error).__qualname__
    stack = "".join(traceback.format_exception(error))
    details = {
        "exception.type": type(error).__qualname__,
        "exception.message": str(error),
        "exception.stacktrace": stack,
    }
    events.append(Event("exception", details, when))
    return Status(StatusCode.ERROR, str(error) or type(error).__qualname__)
