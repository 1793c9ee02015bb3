"""The errno a request ends with, as the caller sees it: one rule for the adapter, spans and metrics."""

from __future__ import annotations

import errno


def errno_of(error: BaseException) -> int:
    """An OSError's own errno (EIO if it has none); EIO for any other exception (a defect)."""
    return (error.errno if isinstance(error, OSError) else None) or errno.EIO


def errno_symbol(code: int) -> str:
    """The symbol of an errno (ENOENT), or its number if it has none."""
    return errno.errorcode.get(code, str(code))
