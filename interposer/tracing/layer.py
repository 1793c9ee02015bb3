"""The tracing layer: a span per operation, grouped under parent spans.

Grouping (docs/tracing.md):

* a file handle's life, ``open``/``create`` to ``release``, is a ``fuse.file``
  span whose children are the handle's operations; a directory handle's life
  is a ``fuse.directory`` span;
* operations without a handle are children of the calling process's
  ``fuse.activity`` span, which ends after ``activity_idle_gap`` of quiet;
* no parent span stays open without bound: past ``segment_max_seconds`` or
  ``segment_max_operations`` it ends with its summary so far, and the next
  child starts a new segment linked to it.  An idle handle's segment is ended
  by the sweeper, so Jaeger shows it while the handle is still open.

Being the outermost layer, a span covers throttle waits and injected faults;
layers inside report those through ``op.events`` and ``op.fault``.
"""

from __future__ import annotations

import errno
import time
from collections import Counter, OrderedDict
from typing import Any

import trio
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, Status, StatusCode, Tracer

from ..config import TracingConfig
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

_DELETED_SUFFIX = " (deleted)"
_SIZED = frozenset({OpName.READ, OpName.WRITE, OpName.SETATTR, OpName.SETXATTR, OpName.READDIR})
_RENAMING = frozenset({OpName.RENAME, OpName.LINK})
_FILE_OPENS = frozenset({OpName.OPEN, OpName.CREATE})
_CALLER = (ATTR_PID, ATTR_UID, ATTR_COMMAND)


class ProcessNames:
    """pid -> command name, read once from /proc and kept in a bounded LRU."""

    def __init__(self, capacity: int = 4096) -> None:
        self._names: OrderedDict[int, str] = OrderedDict()
        self._capacity = capacity

    def __getitem__(self, pid: int) -> str:
        name = self._names.get(pid)
        if name is not None:
            self._names.move_to_end(pid)
            return name
        try:
            with open(f"/proc/{pid}/comm") as handle:
                name = handle.read().strip()
        except OSError:
            name = "" if pid else "kernel"
        self._names[pid] = name
        if len(self._names) > self._capacity:
            self._names.popitem(last=False)
        return name


class Group:
    """A parent span and the summary of its current segment."""

    __slots__ = (
        "attributes",
        "bytes_read",
        "bytes_written",
        "context",
        "counts",
        "errors",
        "inflight",
        "last_active",
        "link",
        "name",
        "operations",
        "segment",
        "span",
        "started",
    )

    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        self.name = name
        self.attributes = attributes
        self.segment = -1
        self.span: Span | None = None
        self.context: Context | None = None
        self.link: Link | None = None
        self.inflight = 0
        self.last_active = 0.0
        self.started = 0.0
        self.operations = self.errors = self.bytes_read = self.bytes_written = 0
        self.counts: Counter[str] = Counter()


class TracingLayer:
    """Outermost layer: times every operation, whatever the inner layers do to it."""

    def __init__(self, tracer: Tracer, config: TracingConfig) -> None:
        self._tracer = tracer
        self._idle_gap = config.activity_idle_gap
        self._max_seconds = config.segment_max_seconds
        self._max_operations = config.segment_max_operations
        self._files: dict[int, Group] = {}
        self._dirs: dict[int, Group] = {}
        self._activities: dict[int, Group] = {}
        self._commands = ProcessNames()

    async def __call__(self, op: Op, call_next: NextCall) -> Any:
        name = op.name
        now = time.monotonic()
        group = self._group_for(op, now)
        parent = self._live_context(group, now)
        span = self._tracer.start_span(SPAN_NAMES[name], context=parent, attributes=self._attributes(op, group))
        group.inflight += 1
        failed = False
        try:
            return await call_next(op)
        except BaseException as exc:
            failed = True
            _record_failure(span, exc)
            raise
        finally:
            group.inflight -= 1
            self._finish(op, span, group, failed)

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
        elif name in _FILE_OPENS or name is OpName.OPENDIR:
            attributes = {
                ATTR_FILE_PATH: op.path,
                ATTR_FILE_INODE: op.inode,
                ATTR_PID: op.pid,
                ATTR_UID: op.uid,
                ATTR_COMMAND: self._commands[op.pid],
                ATTR_FLAGS: op.flags,
            }
            return Group(SPAN_DIRECTORY_SESSION if name is OpName.OPENDIR else SPAN_FILE_SESSION, attributes)
        return self._activity(op.pid, now)

    def _activity(self, pid: int, now: float) -> Group:
        group = self._activities.get(pid)
        if group is not None and group.inflight == 0 and now - group.last_active > self._idle_gap:
            self._end_segment(group)
            group = None
        if group is None:
            attributes = {ATTR_PID: pid, ATTR_COMMAND: self._commands[pid]}
            group = Group(SPAN_ACTIVITY, attributes)
            self._activities[pid] = group
        return group

    def _live_context(self, group: Group, now: float) -> Context:
        """The group's current segment, started (and linked to the last one) if there is none."""
        if group.context is not None and (
            group.operations >= self._max_operations or now - group.started >= self._max_seconds
        ):
            self._end_segment(group)
        if group.context is None:
            group.segment += 1
            group.started = now
            attributes = {**group.attributes, ATTR_SEGMENT: group.segment}
            links = [group.link] if group.link is not None else None
            group.span = self._tracer.start_span(group.name, context=Context(), attributes=attributes, links=links)
            group.context = trace.set_span_in_context(group.span)
        group.last_active = now
        assert group.context is not None
        return group.context

    def _end_segment(self, group: Group) -> None:
        span = group.span
        if span is None:
            return
        span.set_attributes(
            {
                ATTR_SESSION_OPERATIONS: group.operations,
                ATTR_SESSION_ERRORS: group.errors,
                ATTR_SESSION_BYTES_READ: group.bytes_read,
                ATTR_SESSION_BYTES_WRITTEN: group.bytes_written,
                **{ATTR_SESSION_OPS_PREFIX + kind: count for kind, count in group.counts.items()},
            }
        )
        if group.errors:
            span.set_status(Status(StatusCode.ERROR, f"{group.errors} failed operations"))
        span.end()
        group.link = Link(span.get_span_context())
        group.span = group.context = None
        group.operations = group.errors = group.bytes_read = group.bytes_written = 0
        group.counts = Counter()

    def _finish(self, op: Op, span: Span, group: Group, failed: bool) -> None:
        name = op.name
        if op.transferred:
            span.set_attribute(ATTR_TRANSFERRED, op.transferred)
        if name is OpName.LINK and not failed:
            span.set_attribute(ATTR_OTHER_PATHS, op.resolver.paths_of_inode(op.inode))
        if op.fault is not None:
            span.set_attribute(ATTR_FAULT, op.fault)
        if op.events:
            for event, attributes in op.events:
                span.add_event(event, attributes)
        span.end()
        group.operations += 1
        group.counts[name.value] += 1
        if failed:
            group.errors += 1
        elif name is OpName.READ:
            group.bytes_read += op.transferred
        elif name is OpName.WRITE:
            group.bytes_written += op.transferred
        if name in _FILE_OPENS:
            self._opened(self._files, op, group, failed)
        elif name is OpName.OPENDIR:
            self._opened(self._dirs, op, group, failed)
        elif name is OpName.RELEASE:
            self._closed(self._files, op.fh)
        elif name is OpName.RELEASEDIR:
            self._closed(self._dirs, op.fh)

    def _opened(self, table: dict[int, Group], op: Op, group: Group, failed: bool) -> None:
        if failed:
            self._end_segment(group)
            return
        group.attributes[ATTR_HANDLE] = op.fh
        if group.span is not None:
            group.span.set_attribute(ATTR_HANDLE, op.fh)
        table[op.fh] = group

    def _closed(self, table: dict[int, Group], fh: int) -> None:
        group = table.pop(fh, None)
        if group is not None:
            self._end_segment(group)

    # -- attributes --------------------------------------------------------------------

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
        if name in _RENAMING:
            attributes[ATTR_NEW_PATH] = op.new_path
        if op.pid:
            attributes[ATTR_PID] = op.pid
            attributes[ATTR_UID] = op.uid
            attributes[ATTR_GID] = op.gid
            attributes[ATTR_COMMAND] = self._commands[op.pid]
        elif group.name != SPAN_ACTIVITY:
            # pyfuse3 gives handle operations no caller: they belong to the process that opened the handle.
            for key in _CALLER:
                attributes[key] = group.attributes[key]
        return attributes

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
                if group.span is not None and group.inflight == 0 and now - group.started >= self._max_seconds:
                    self._end_segment(group)

    def close(self) -> None:
        """End every open parent span (the mount is going away)."""
        for table in (self._files, self._dirs, self._activities):
            for group in table.values():
                self._end_segment(group)
            table.clear()


def _record_failure(span: Span, exc: BaseException) -> None:
    if isinstance(exc, OSError):
        code = exc.errno or errno.EIO
        span.set_attributes({ATTR_ERROR_TYPE: errno.errorcode.get(code, str(code)), ATTR_ERRNO: code})
        span.set_status(Status(StatusCode.ERROR, exc.strerror or errno.errorcode.get(code, "")))
    else:
        span.set_attributes({ATTR_ERROR_TYPE: type(exc).__qualname__, ATTR_ERRNO: errno.EIO})
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, str(exc) or type(exc).__qualname__))
