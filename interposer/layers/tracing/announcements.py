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

The name never reaches the backend: it is answered here, and filtered out of
``listxattr`` (should the backing directory carry it, set from outside).
"""

from __future__ import annotations

import errno

import pyfuse3

from ...names import TRACE_CONTEXT_XATTR
from .propagation import CallerContexts, thread_group

_NAME = TRACE_CONTEXT_XATTR.encode()
_FOR_THREAD = _NAME + b"."


def is_reserved(name: bytes) -> bool:
    """Whether an xattr name is the protocol's, and so never the backend's."""
    return name == _NAME or name.startswith(_FOR_THREAD)


def visible(names: list[bytes]) -> list[bytes]:
    """An xattr listing without the reserved names."""
    return [name for name in names if not is_reserved(name)]


def _error(code: int, why: str) -> OSError:
    return OSError(code, f"{TRACE_CONTEXT_XATTR}: {why}")


class TraceContextXattr:
    """Answers the reserved xattr: announcements go to ``CallerContexts``, keyed by thread."""

    def __init__(self, contexts: CallerContexts) -> None:
        self._contexts = contexts

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
        if name == _NAME:
            return caller
        suffix = name[len(_FOR_THREAD) :]
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
