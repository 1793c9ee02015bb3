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
configured ratio, or as the caller's trace says when it continues one.  An
operation outside a sampled segment is still kept if ``always_keep`` names
it: by default a failure or an injected fault, but not an expected failure
(``names.EXPECTED_FAILURES``): a lookup that found no entry, which is how every
create starts, or the getxattr ENODATA of the kernel's probe before a write,
which are sampled like successes (they are still errors in metrics).  Its parent span is then created on
demand, so a kept span always has its parent.  The decision is made when the
operation ends, before anything is built: a dropped operation costs two clock
reads and a few counters.  A kept operation becomes a record of plain values
(``records``) handed to the span sink; SDK spans are built from it in the
export process, off the request thread (docs/performance.md).  Parent spans
too: while a segment is open only its ids exist; its record, with the
summary, is handed over when it ends.

The trace-context protocol's reserved xattr (``announcements``) is answered
here, before anything else: the announcement is how a caller's trace reaches
the mount, not file I/O of the caller's, so it makes no span and, answered
outside them, no measurement, fault or throttle wait.

Being the outermost layer, a span covers throttle waits and injected faults;
layers inside report those through the request's ``Notes``.  What the span
says about the request (paths, caller, handle inode) was resolved at entry,
so a release names the file it released.
"""

from __future__ import annotations

import itertools
import random
import time
import traceback
from typing import Any, Protocol

import trio

from ...config import KEEP_ERRORS, KEEP_FAULTS, KEEP_NEGATIVE_LOOKUPS, TracingConfig
from ...errnos import errno_of, errno_symbol
from ...fuse.callers import ProcessNames
from ...fuse.pipeline import NextCall
from ...fuse.request import Notes, Reply, Request
from ...fuse.reserved import is_reserved
from ...names import (
    ATTR_COMMAND,
    ATTR_FILE_INODE,
    ATTR_FILE_PATH,
    ATTR_FLAGS,
    ATTR_HANDLE,
    ATTR_PID,
    ATTR_SEGMENT,
    ATTR_SESSION_BYTES_READ,
    ATTR_SESSION_BYTES_WRITTEN,
    ATTR_SESSION_ERRORS,
    ATTR_SESSION_OPERATIONS,
    ATTR_SESSION_OPS_PREFIX,
    ATTR_UID,
    DIRECTION_READ,
    DIRECTION_WRITE,
    HANDLE_DIRECTORY,
    HANDLE_FILE,
    SPAN_ACTIVITY,
    SPAN_DIRECTORY_SESSION,
    SPAN_FILE_SESSION,
    Addressing,
    OpName,
    is_expected_failure,
)
from .announcements import TraceContextXattr
from .propagation import CallerContexts, RemoteParent
from .records import Events, operation_record, session_record

_SESSION_SPANS = {HANDLE_FILE: SPAN_FILE_SESSION, HANDLE_DIRECTORY: SPAN_DIRECTORY_SESSION}
"""The parent span of a handle's life, by the kind of handle (names.OpTraits.opens)."""
_NO_REPLY = Reply()
_SUCCEEDED = (0, None, None)
_OP_NAMES = {op: op.value for op in OpName}
"""Plain strings: the records are marshalled, which takes no str subclass."""
_getrandbits = random.getrandbits
_clock = time.time_ns
"""One clock for span times, idle gaps and segment ages: a span's times are wall-clock ns anyway."""


class SpanSink(Protocol):
    """Where kept records go (``telemetry.shipper.SpanShipper``); ``add`` must never block."""

    def add(self, record: tuple[Any, ...]) -> None: ...


def _new_id(bits: int) -> int:
    """A random non-zero trace (128 bits) or span (64 bits) id, as the W3C trace context requires."""
    while True:
        value = _getrandbits(bits)
        if value:
            return value


class Group:
    """A parent span (created when first needed) and the summary of its current segment.

    Class-level defaults, not slots: a file handle's group is made on every
    open or create, and this way only three fields are set then.
    """

    handle = -1
    segment = -1
    ids: tuple[int, int] | None = None
    link: tuple[int, int] | None = None
    """The previous segment's (trace, span) ids."""
    sampled = False
    inflight = 0
    last_active = started = deadline = 0
    """Times in ns since the epoch; a deadline of 0 makes the first operation start a segment."""
    operations = errors = bytes_read = bytes_written = 0
    _command: str | None = None
    remote: RemoteParent | None = None
    """The caller's span that every segment of this parent span is a child of (``propagation``)."""

    def __init__(self, name: str, pid: int, opener: Request | None) -> None:
        self.name = name
        self.pid = pid
        self.opener = opener
        self.counts: dict[str, int] = {}

    def command(self, names: ProcessNames) -> str:
        """The command name of the group's process, looked up once."""
        if self._command is None:
            self._command = names[self.pid]
        return self._command


class TracingLayer:
    """Outermost layer: times every operation, whatever the inner layers do to it."""

    def __init__(
        self, sink: SpanSink, config: TracingConfig, ratio: float, contexts: CallerContexts | None = None
    ) -> None:
        """``contexts``: the trace contexts callers announce (answered whatever ``propagation`` says, as ever) and
        inherit; parent spans continue them only with ``propagation``.  None: no announcements are taken."""
        self._sink = sink
        self._ratio = ratio
        self._idle_gap_ns = int(config.activity_idle_gap * 1e9)
        self._max_ns = int(config.segment_max_seconds * 1e9)
        self._sweep_interval = min(config.activity_idle_gap, config.segment_max_seconds) / 2
        self._sweeper_parked: trio.Event | None = None
        self._max_operations = config.segment_max_operations
        self._span_ids = itertools.count(_new_id(62))
        self._files: dict[int, Group] = {}
        self._dirs: dict[int, Group] = {}
        self._activities: dict[int, Group] = {}
        self._commands = ProcessNames()
        self._keep_errors = KEEP_ERRORS in config.always_keep
        self._keep_negative_lookups = KEEP_NEGATIVE_LOOKUPS in config.always_keep
        self._keep_faults = KEEP_FAULTS in config.always_keep
        self._announcements = None if contexts is None else TraceContextXattr(contexts)
        self._contexts = contexts if config.propagation else None
        if self._contexts is not None:
            self._contexts.on_change(self._context_announced)
        self.kept = 0
        self.sampled_out = 0

    async def __call__(self, op: Request, notes: Notes, call_next: NextCall) -> Reply:
        if op.xattr_name and self._announcements is not None and is_reserved(op.xattr_name):
            return self._announcements.answer(op)
        start = _clock()
        group = self._group_for(op, start)
        if group.operations >= self._max_operations or start >= group.deadline:
            self._new_segment(group, start)
        group.last_active = start
        group.inflight += 1
        parent = group.ids if group.sampled else None
        if parent is not None:  # the span will be kept: its identity exists from the start, for inner layers
            notes.span_ids = (parent[0], next(self._span_ids))
        try:
            reply = await call_next(op, notes)
        except BaseException as error:
            group.inflight -= 1
            self._finish(op, notes, _NO_REPLY, group, parent, start, error)
            raise
        group.inflight -= 1
        self._finish(op, notes, reply, group, parent, start, None)
        return reply

    # -- groups ------------------------------------------------------------------------

    def _group_for(self, op: Request, now: int) -> Group:
        traits = op.traits
        addressing = traits.addressing
        if addressing is Addressing.HANDLE:
            group = self._files.get(op.fh)
            if group is not None:
                return group
        elif addressing is Addressing.DIR_HANDLE:
            group = self._dirs.get(op.fh)
            if group is not None:
                return group
        if traits.opens is not None:
            return self._new_group(_SESSION_SPANS[traits.opens], op.pid, op)
        group = self._activities.get(op.pid)
        if group is not None and group.inflight == 0 and now - group.last_active > self._idle_gap_ns:
            self._end_segment(group)
            group = None
        if group is None:
            group = self._new_group(SPAN_ACTIVITY, op.pid, None)
            self._activities[op.pid] = group
        return group

    def _new_group(self, name: str, pid: int, opener: Request | None) -> Group:
        """A parent span for the caller, continuing the caller's trace if it has one (asked once per group)."""
        group = Group(name, pid, opener)
        if self._contexts is not None:
            group.remote = self._contexts.parent_for(pid)
        return group

    def _context_announced(self, tid: int) -> None:
        """A thread announced or cleared its context: its activity so far belongs to the previous one."""
        group = self._activities.pop(tid, None)
        if group is not None:
            self._end_segment(group)

    def _new_segment(self, group: Group, now: int) -> None:
        self._end_segment(group)
        if self._sweeper_parked is not None:  # something may end by itself from now on: the sweeper watches it
            self._sweeper_parked.set()
        group.segment += 1
        group.started = now
        group.deadline = now + self._max_ns
        remote = group.remote
        group.sampled = random.random() < self._ratio if remote is None else remote.sampled  # parent-based
        if group.sampled:
            self._parent_span(group)

    def _parent_span(self, group: Group) -> tuple[int, int]:
        """The (trace, span) ids of the group's span for this segment, allotted on first need.

        The span itself is handed over, finished, when the segment ends: until
        then only its ids exist, which is all its children need.
        """
        if group.ids is None:
            remote = group.remote
            group.ids = (_new_id(128) if remote is None else remote.trace_id, next(self._span_ids))
        return group.ids

    def _end_segment(self, group: Group) -> None:
        ids = group.ids
        if ids is not None:
            attributes: dict[str, Any] = {ATTR_PID: group.pid, ATTR_COMMAND: group.command(self._commands)}
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
            times = (group.started, _clock())
            parent = 0 if group.remote is None else group.remote.span_id
            self._sink.add(session_record(group.name, ids, group.link, times, attributes, parent))
            group.link = ids
            group.ids = None
        if group.operations:
            group.operations = group.errors = group.bytes_read = group.bytes_written = 0
            group.counts = {}

    # -- operations --------------------------------------------------------------------

    def _finish(
        self,
        op: Request,
        notes: Notes,
        reply: Reply,
        group: Group,
        parent: tuple[int, int] | None,
        start: int,
        error: BaseException | None,
    ) -> None:
        """Account the operation to its group and hand over its record if kept.

        ``parent`` is the segment the operation started in, if that was sampled;
        the group may have moved on to a new segment since.
        """
        name = op.name
        traits = op.traits
        group.operations += 1
        counts = group.counts
        counts[name] = counts.get(name, 0) + 1
        if error is not None:
            group.errors += 1
        elif traits.direction is DIRECTION_READ:
            group.bytes_read += reply.transferred
        elif traits.direction is DIRECTION_WRITE:
            group.bytes_written += reply.transferred
        if (
            parent is not None
            or group.sampled
            or (error is not None and self._keeps_failure(name, error))
            or (notes.fault is not None and self._keep_faults)
        ):
            self.kept += 1
            if parent is None:
                parent = self._parent_span(group)
            ids = notes.span_ids
            failure: tuple[int, str | None, str | None] = _SUCCEEDED
            events = notes.events
            if error is not None:
                failure, events = _failure(error, events)
            fh = op.fh if reply.handle < 0 else reply.handle
            self._sink.add(
                operation_record(
                    _OP_NAMES[name],
                    (parent[0], next(self._span_ids) if ids is None else ids[1], parent[1]),
                    (start, _clock()),
                    (op.path, op.inode, fh, op.offset, op.size, reply.transferred),
                    (op.new_path, op.other_paths),
                    self._caller(op, group),
                    failure,
                    notes.fault,
                    events,
                )
            )
        else:
            self.sampled_out += 1
        if traits.releases is not None:
            self._closed(self._dirs if traits.releases is HANDLE_DIRECTORY else self._files, op.fh)
        elif traits.opens is not None:
            self._opened(self._dirs if traits.opens is HANDLE_DIRECTORY else self._files, reply, group, error)

    def _keeps_failure(self, name: OpName, error: BaseException) -> bool:
        """Whether ``always_keep`` keeps this failure.  An expected one (``names.EXPECTED_FAILURES``: a lookup that
        found nothing, the kernel's security.capability probe before a write) is sampled like a success, but a
        lookup's is kept when ``negative_lookups`` is listed."""
        if not is_expected_failure(name, errno_symbol(errno_of(error))):
            return self._keep_errors
        return name is OpName.LOOKUP and self._keep_negative_lookups

    def _caller(self, op: Request, group: Group) -> tuple[int, int, int, str]:
        """(pid, uid, gid, command) of the operation's caller (for a handle operation, resolved: its opener)."""
        pid = op.pid
        command = group.command(self._commands) if pid == group.pid else self._commands[pid]
        return (pid, op.uid, op.gid, command)

    def _opened(self, table: dict[int, Group], reply: Reply, group: Group, error: BaseException | None) -> None:
        if error is not None:
            self._end_segment(group)
            return
        group.handle = reply.handle
        table[reply.handle] = group

    def _closed(self, table: dict[int, Group], fh: int) -> None:
        group = table.pop(fh, None)
        if group is not None:
            self._end_segment(group)

    # -- lifetime ----------------------------------------------------------------------

    async def sweep(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """End idle activity spans and over-age segments, so nothing stays open without bound.

        It wakes only when something is due (at most every ``_sweep_interval``, so busy groups whose ends keep
        moving do not wake it more often), and sleeps for good while nothing is open, until a segment starts:
        an idle mount burns no CPU (docs/performance.md, "An idle mount")."""
        task_status.started()
        while True:
            due = self._sweep(_clock())
            if due is None:
                self._sweeper_parked = trio.Event()
                await self._sweeper_parked.wait()
                self._sweeper_parked = None
            else:
                await trio.sleep(max(due, self._sweep_interval))

    def _sweep(self, now: int) -> float | None:
        """End what is due; the seconds until the next group may be due, or None when no group can end itself."""
        soonest: int | None = None
        for pid, group in list(self._activities.items()):
            due = group.last_active + self._idle_gap_ns
            if group.inflight == 0 and now > due:
                self._end_segment(group)
                del self._activities[pid]
            elif soonest is None or due < soonest:
                soonest = due
        for group in (*self._files.values(), *self._dirs.values()):
            if group.ids is None:
                continue  # nothing open: its next operation starts a segment, which wakes the sweeper
            if group.inflight == 0 and now >= group.deadline:
                self._end_segment(group)  # the handle's next operation starts the next segment
            elif soonest is None or group.deadline < soonest:
                soonest = group.deadline
        return None if soonest is None else max(soonest - now, 0) / 1e9

    def close(self) -> None:
        """End every open parent span (the mount is going away)."""
        for table in (self._files, self._dirs, self._activities):
            for group in table.values():
                self._end_segment(group)
            table.clear()


def _failure(error: BaseException, events: Events) -> tuple[tuple[int, str | None, str | None], Events]:
    """An operation's failure as (errno, error type, message), and its events with, for a defect, the exception.

    An OSError's error type is its errno's symbol, named where the span is built.
    """
    code = errno_of(error)
    if isinstance(error, OSError):
        return (code, None, error.strerror), events
    kind = type(error).__qualname__
    details = {
        "exception.type": kind,
        "exception.message": str(error),
        "exception.stacktrace": "".join(traceback.format_exception(error)),
    }
    return (code, kind, str(error) or kind), [*(events or ()), ("exception", details)]
