"""``with interposer.traced_io(): ...``: a thread's file I/O under a mount continues its current span.

The helper speaks the mount's announcement protocol
(``layers.tracing.announcements``): on entry it announces the thread's current
OpenTelemetry span context, in W3C trace-context form, to each mount; on exit
it restores what was announced before (an enclosing ``traced_io``) or clears
it.  It needs only the OpenTelemetry API, so any program that traces with
the SDK (or none: then the helper does nothing) can use it.

Which mounts: the ones given, else the mountpoints in ``INTERPOSER_TRACED_MOUNTS``
(separated like ``PATH``).  A path that is not an interposer mount is
skipped, so the reserved attribute is never written to an ordinary
directory.  Tracing never breaks I/O: a mount that refuses the announcement
is logged once and skipped.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .names import TRACE_CONTEXT_XATTR, TRACED_MOUNTS_VARIABLE

log = logging.getLogger(__name__)

MOUNT_TYPE = "fuse.interposer"
"""The file-system type of an interposer mount in /proc/self/mountinfo."""

_PROPAGATOR = TraceContextTextMapPropagator()
_announced = threading.local()
"""Per thread: mountpoint -> the stack of values announced by the enclosing ``traced_io`` blocks."""
_complained: set[str] = set()


def _interposer_mounts() -> set[str]:
    """Mountpoints of interposer mounts visible to this process."""
    mounts = set()
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            separator = fields.index("-")
            if fields[separator + 1] == MOUNT_TYPE:
                mounts.add(fields[4].replace("\\040", " "))
    return mounts


def _targets(mountpoints: tuple[str | os.PathLike[str], ...]) -> list[str]:
    chosen = [os.fspath(m) for m in mountpoints] or [
        m for m in (os.environ.get(TRACED_MOUNTS_VARIABLE) or "").split(os.pathsep) if m
    ]
    if not chosen:
        return []
    mounts = _interposer_mounts()
    targets = [str(Path(m).resolve()) for m in chosen]
    for target in targets:
        if target not in mounts:
            _complain(target, "not an interposer mount")
    return [target for target in targets if target in mounts]


def _complain(mountpoint: str, why: str) -> None:
    if mountpoint not in _complained:
        _complained.add(mountpoint)
        log.warning("traced_io: %s: %s; its file I/O starts traces of its own", mountpoint, why)


def _current_value() -> bytes | None:
    """The current span context as the protocol's value, or None when there is no valid span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    if "traceparent" not in carrier:
        return None
    value = carrier["traceparent"]
    if carrier.get("tracestate"):
        value += "\n" + carrier["tracestate"]
    return value.encode()


def _set(mountpoint: str, value: bytes | None) -> bool:
    try:
        if value is None:
            os.removexattr(mountpoint, TRACE_CONTEXT_XATTR)
        else:
            os.setxattr(mountpoint, TRACE_CONTEXT_XATTR, value)
    except OSError as exc:
        _complain(mountpoint, f"the announcement was refused ({exc.strerror})")
        return False
    return True


@contextmanager
def traced_io(*mountpoints: str | os.PathLike[str]) -> Iterator[None]:
    """File I/O of this thread under the mounts, inside the block, is part of the current span's trace.

    Its file and directory sessions and its activity become children of the
    span current on entry.  Without a valid current span it does nothing.
    """
    if not trace.get_current_span().get_span_context().is_valid:
        yield
        return
    value = _current_value()
    stacks: dict[str, list[bytes]] = getattr(_announced, "stacks", None) or {}
    _announced.stacks = stacks
    announced = [m for m in _targets(mountpoints) if _set(m, value)]
    for mountpoint in announced:
        stacks.setdefault(mountpoint, []).append(value or b"")
    try:
        yield
    finally:
        for mountpoint in announced:
            stack = stacks[mountpoint]
            stack.pop()
            _set(mountpoint, stack[-1] if stack else None)
