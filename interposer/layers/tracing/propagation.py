"""Callers' trace contexts: where a caller's file I/O continues the caller's own trace.

Two sources, the announced one first (docs/tracing.md, "Continuing the caller's trace"):

* a context the calling *thread* announced to the mount (``announcements``),
  for long-running programs whose current span changes;
* ``TRACEPARENT`` (and ``TRACESTATE``) in the calling *process's* environment,
  OpenTelemetry's carrier for handing a context to a child process, so a
  program started with them joins the trace with no code change.

FUSE reports the calling thread's id (the kernel fills the request header
with ``task_pid(current)``, not the thread group), and only for requests made
by a process visible in the mount's pid namespace: 0 otherwise.  A thread's
process is the ``Tgid`` in ``/proc/<tid>/status``; ``/proc/<tid>/environ``
shows the process's environment, which the kernel lets the mount read only if
it may ptrace the caller (``PTRACE_MODE_READ_FSCREDS``: same user, or
``CAP_SYS_PTRACE``).  Whatever cannot be read leaves the parent span to start
its own trace.

Cost.  This is asked once per parent span (a handle opened, a directory
opened, a process's activity starting), never per operation.  A thread is
named by its id and start time (``/proc/<tid>/stat``), read at most once a
second per thread (``IDENTITY_RECHECK_NS``).  A new thread costs its
``status`` and its process's ``stat``; a new process, its environment, once.
The caches are bounded LRUs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ...names import (
    STATUS_CONTEXT_MALFORMED,
    STATUS_ENVIRONMENTS_READ,
    STATUS_ENVIRONMENTS_UNREADABLE,
    STATUS_PROCESSES_CACHED,
    STATUS_THREADS_ANNOUNCED,
    TRACEPARENT_VARIABLE,
    TRACESTATE_VARIABLE,
)
from ...procfs import start_time

_PROPAGATOR = TraceContextTextMapPropagator()
IDENTITY_RECHECK_NS = 1_000_000_000
"""How long a thread's identity (id and start time) is trusted before ``/proc`` is read again.  Reading it costs
tens of microseconds, and a thread id is reused only after the kernel has handed out every other pid
(``kernel.pid_max``, 32768 at the least), which in a second only a fork bomb does."""
_TRACEPARENT = TRACEPARENT_VARIABLE.encode() + b"="
_TRACESTATE = TRACESTATE_VARIABLE.encode() + b"="


@dataclass(frozen=True, slots=True)
class RemoteParent:
    """The caller's span that the file I/O's parent spans become children of."""

    trace_id: int
    span_id: int
    sampled: bool
    """The W3C ``sampled`` flag: the caller keeps this trace, so the mount keeps its file spans."""


def parse_trace_context(traceparent: str, tracestate: str | None = None) -> RemoteParent | None:
    """The context in W3C ``traceparent``/``tracestate`` form, by OpenTelemetry's own propagator; None if invalid."""
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    span_context = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
    if not span_context.is_valid:
        return None
    return RemoteParent(span_context.trace_id, span_context.span_id, span_context.trace_flags.sampled)


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def thread_group(tid: int) -> int:
    """The process (thread group) a thread belongs to."""
    for line in _read(f"/proc/{tid}/status").splitlines():
        if line.startswith(b"Tgid:"):
            return int(line.split()[1])
    raise OSError(f"no Tgid in /proc/{tid}/status")


K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """A bounded mapping that forgets the least recently used entry."""

    def __init__(self, capacity: int) -> None:
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True, slots=True)
class _Process:
    """A cached process: its identity and the context of its environment (None: none, or malformed)."""

    key: tuple[int, int]
    parent: RemoteParent | None


@dataclass(frozen=True, slots=True)
class _Thread:
    """A cached thread: its start time, its process, and when its identity was last read."""

    started: int
    process: _Process
    checked: int
    """``time.monotonic_ns()``."""


_NO_PARENT = _Process((0, 0), None)
"""Stands for a process whose environment could not be read, so it is not read again for that thread."""


@dataclass(frozen=True, slots=True)
class Announcement:
    """A thread's announced context, valid while the thread that announced lives (same id, same start)."""

    parent: RemoteParent
    started: int


class CallerContexts:
    """The remote parent of each caller's parent spans: announced by the thread, or in its process's environment."""

    def __init__(self, capacity: int) -> None:
        self._threads: _Lru[int, _Thread] = _Lru(capacity)
        """tid -> the thread and its process, resolved once per thread."""
        self._processes: _Lru[tuple[int, int], _Process] = _Lru(capacity)
        """(pid, process start) -> the context in its environment, read once per process."""
        self._announced: _Lru[int, Announcement] = _Lru(capacity)
        self._listeners: list[Callable[[int], None]] = []
        self.malformed = 0
        self.environments_read = 0
        self.unreadable = 0

    def parent_for(self, tid: int) -> RemoteParent | None:
        """The span a parent span started for this thread's request continues; None: a trace of its own."""
        if not tid:  # the caller is outside the mount's pid namespace
            return None
        thread = self._thread(tid)
        if thread is None:
            return None
        announcement = self._announced.get(tid)
        if announcement is not None:
            if announcement.started == thread.started:
                return announcement.parent
            self._announced.pop(tid)  # announced by an earlier thread with the same id, which never cleared it
        return thread.process.parent

    def _thread(self, tid: int) -> _Thread | None:
        """The thread with this id now: its identity is read again once it is ``IDENTITY_RECHECK_NS`` old."""
        now = time.monotonic_ns()
        thread = self._threads.get(tid)
        if thread is not None and now - thread.checked < IDENTITY_RECHECK_NS:
            return thread
        try:
            started = start_time(tid)
        except (OSError, ValueError, IndexError):
            self.unreadable += 1
            return None
        process = thread.process if thread is not None and thread.started == started else self._process_of(tid)
        thread = _Thread(started, process, now)
        self._threads.put(tid, thread)
        return thread

    def _process_of(self, tid: int) -> _Process:
        try:
            pid = thread_group(tid)
            key = (pid, start_time(pid))
        except (OSError, ValueError, IndexError):
            self.unreadable += 1
            return _NO_PARENT
        process = self._processes.get(key)
        if process is None:
            process = _Process(key, self._environment_parent(pid))
            self._processes.put(key, process)
        return process

    def _environment_parent(self, pid: int) -> RemoteParent | None:
        try:
            environment = _read(f"/proc/{pid}/environ")
        except OSError:  # gone, or the mount may not ptrace-read it (docs/kubernetes.md)
            self.unreadable += 1
            return None
        self.environments_read += 1
        traceparent = tracestate = None
        for variable in environment.split(b"\0"):
            if variable.startswith(_TRACEPARENT):
                traceparent = variable[len(_TRACEPARENT) :]
            elif variable.startswith(_TRACESTATE):
                tracestate = variable[len(_TRACESTATE) :]
        if traceparent is None:
            return None
        return self.parse(traceparent, tracestate)

    def parse(self, traceparent: bytes, tracestate: bytes | None) -> RemoteParent | None:
        """A context from a caller, or None, counted, if it is malformed: never an error for the I/O."""
        try:
            state = tracestate.decode("ascii") if tracestate else None
            parent = parse_trace_context(traceparent.decode("ascii"), state)
        except UnicodeDecodeError:
            parent = None
        if parent is None:
            self.malformed += 1
        return parent

    # -- announcements (``announcements.TraceContextXattr`` speaks the protocol) --------------------------

    def announce(self, tid: int, parent: RemoteParent) -> None:
        """From now on, parent spans started for this thread continue ``parent``."""
        self._announced.put(tid, Announcement(parent, start_time(tid)))
        self._changed(tid)

    def clear(self, tid: int) -> None:
        """The thread's parent spans go back to its environment's context, or a trace of their own."""
        if self._announced.pop(tid) is not None:
            self._changed(tid)

    def announced(self, tid: int) -> RemoteParent | None:
        announcement = self._announced.get(tid)
        return None if announcement is None else announcement.parent

    def on_change(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(tid)`` when a thread's announced context changes (its open activity span must end)."""
        self._listeners.append(listener)

    def _changed(self, tid: int) -> None:
        for listener in self._listeners:
            listener(tid)

    def status(self) -> dict[str, int]:
        return {
            STATUS_CONTEXT_MALFORMED: self.malformed,
            STATUS_ENVIRONMENTS_READ: self.environments_read,
            STATUS_ENVIRONMENTS_UNREADABLE: self.unreadable,
            STATUS_PROCESSES_CACHED: len(self._processes),
            STATUS_THREADS_ANNOUNCED: len(self._announced),
        }
