"""The protocol by which a thread announces its current span context to the mount: a reserved xattr of the root.

With ``NAME`` = ``user.cnfs-interposer.trace-context`` (``names.TRACE_CONTEXT_XATTR``)::

    setxattr(MOUNT, NAME, "<traceparent>[\\n<tracestate>]")   announce, for the calling thread
    removexattr(MOUNT, NAME)                                  clear
    getxattr(MOUNT, NAME)                                     the thread's announced traceparent (ENODATA: none)

``NAME.<tid>`` instead of ``NAME`` does the same for another thread of the
calling process (an event loop announcing for the worker thread that will do
the I/O); for a thread of another process it is refused with EPERM, so no
program can put its I/O into another program's trace.

Why an extended attribute rather than a write to a reserved file: it is one
request, atomic, keyed by the thread that makes it (FUSE reports the caller
of ``setxattr``, where pyfuse3 gives ``write`` none), with no handle and no
directory entry to hide from listings.  The price: for a ``user.*`` attribute
the kernel first checks that the caller may write the root directory.

The tracing layer answers it (``TraceContextXattr.answer``), first thing, so
the announcement itself is neither a span nor a measurement, and no fault or
throttle acts on it.  The name never reaches the backend: the end of the
pipeline refuses what no layer answered and filters it out of ``listxattr``
(``fuse/reserved.py``).
"""

from __future__ import annotations

import errno

import pyfuse3

from ...fuse.request import NONE, Reply, Request
from ...fuse.reserved import FOR_THREAD, TRACE_CONTEXT
from ...names import TRACE_CONTEXT_XATTR, OpName
from .propagation import CallerContexts, thread_group


def _error(code: int, why: str) -> OSError:
    return OSError(code, f"{TRACE_CONTEXT_XATTR}: {why}")


class TraceContextXattr:
    """Answers the reserved xattr: announcements go to ``CallerContexts``, keyed by thread."""

    def __init__(self, contexts: CallerContexts) -> None:
        self._contexts = contexts

    def answer(self, request: Request) -> Reply:
        """Answer a setxattr, getxattr or removexattr of a reserved name (``fuse.reserved.is_reserved``)."""
        name, inode, caller = request.xattr_name, request.inode, request.pid
        if request.name is OpName.SETXATTR:
            self.set(inode, name, request.data, caller)
            return NONE
        if request.name is OpName.GETXATTR:
            return Reply(self.get(inode, name, caller))
        self.remove(inode, name, caller)
        return NONE

    def set(self, inode: int, name: bytes, value: bytes, caller: int) -> None:
        """Announce: the value is a W3C traceparent, optionally a newline and a tracestate."""
        tid = self._target(inode, name, caller)
        traceparent, _, tracestate = value.strip().partition(b"\n")
        parent = self._contexts.parse(traceparent, tracestate or None)
        if parent is None:
            raise _error(errno.EINVAL, "not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)")
        self._contexts.announce(tid, parent)

    def remove(self, inode: int, name: bytes, caller: int) -> None:
        """Clear the thread's announcement (clearing none is not an error: a helper may clear twice)."""
        self._contexts.clear(self._target(inode, name, caller))

    def get(self, inode: int, name: bytes, caller: int) -> bytes:
        """The thread's announced context as a traceparent, for programs and people checking the protocol."""
        if inode != pyfuse3.ROOT_INODE:
            raise _error(errno.ENODATA, "only the mount root has it")
        parent = self._contexts.announced(self._target(inode, name, caller))
        if parent is None:
            raise _error(errno.ENODATA, "nothing announced")
        return f"00-{parent.trace_id:032x}-{parent.span_id:016x}-{int(parent.sampled):02x}".encode()

    def _target(self, inode: int, name: bytes, caller: int) -> int:
        """The thread the request is about, checked: the caller, or another thread of the caller's process."""
        if inode != pyfuse3.ROOT_INODE:
            raise _error(errno.EPERM, "announce on the mount root")
        if not caller:
            raise _error(errno.EPERM, "the mount cannot see the calling process (another pid namespace)")
        if name == TRACE_CONTEXT:
            return caller
        suffix = name[len(FOR_THREAD) :]
        if not suffix.isdigit():
            raise _error(errno.EINVAL, "the suffix must be a thread id")
        tid = int(suffix)
        try:
            same_process = thread_group(tid) == thread_group(caller)
        except (OSError, ValueError):
            raise _error(errno.ESRCH, f"no thread {tid}") from None
        if not same_process:
            raise _error(errno.EPERM, f"thread {tid} belongs to another process")
        return tid
