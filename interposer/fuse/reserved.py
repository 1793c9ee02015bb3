"""The mount's own extended attributes: answered by a layer inside the pipeline, never by the backend.

The one reserved name today is the trace-context protocol's (``names.TRACE_CONTEXT_XATTR``, and its
``NAME.<tid>`` form), which the tracing layer answers (``layers/tracing/announcements.py``).  The end of the
pipeline keeps every reserved name from the backend, both ways, whichever layers run: a request for one that no
layer answered (tracing off, or switched off) is refused with ENOTSUP, and a listing the backend made leaves them
out (should the backing directory carry one, set from outside).
"""

from __future__ import annotations

import errno

from ..names import TRACE_CONTEXT_XATTR

TRACE_CONTEXT = TRACE_CONTEXT_XATTR.encode()
"""The trace-context name as the kernel sends it: announces for the calling thread."""
FOR_THREAD = TRACE_CONTEXT + b"."
"""Followed by a thread id: announces for that thread of the calling process."""


def is_reserved(name: bytes) -> bool:
    """Whether an xattr name is the mount's, and so never the backend's."""
    return name == TRACE_CONTEXT or name.startswith(FOR_THREAD)


def visible(names: list[bytes]) -> list[bytes]:
    """An xattr listing without the reserved names."""
    return [name for name in names if not is_reserved(name)]


def unanswered(name: bytes) -> OSError:
    """The error for a reserved name that reached the end of the pipeline: no layer here takes it."""
    return OSError(errno.ENOTSUP, f"{name.decode(errors='replace')}: not answered by this mount (tracing is off)")
