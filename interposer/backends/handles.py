"""The one handle table both backends keep: what each open file or directory handle refers to.

The adapter resolves a handle request through it before any layer runs, so
an unknown handle is answered EBADF there, as the kernel would answer a bad
descriptor, instead of surfacing later as an internal error.
"""

from __future__ import annotations

import errno

from ..names import HANDLE_DIRECTORY, HANDLE_FILE


class Handle:
    """An open file or directory: its inode, who opened it, its open flags, a directory's listing snapshot."""

    __slots__ = ("flags", "inode", "kind", "listing", "opener")

    def __init__(self, kind: str, inode: int, opener: tuple[int, int, int], flags: int = 0) -> None:
        self.kind = kind
        """HANDLE_FILE or HANDLE_DIRECTORY."""
        self.inode = inode
        self.opener = opener
        """The opener's (pid, uid, gid): pyfuse3 gives handle requests no caller of their own."""
        self.flags = flags
        self.listing: list[bytes] | None = None
        """A directory's entries, snapshotted when it is read from offset 0."""


def bad_handle(fh: int) -> OSError:
    return OSError(errno.EBADF, f"no open handle {fh}")


class HandleTable:
    """Handle number -> ``Handle``, for files and directories alike (each backend numbers them uniquely)."""

    def __init__(self) -> None:
        self._handles: dict[int, Handle] = {}

    def add(self, fh: int, handle: Handle) -> None:
        self._handles[fh] = handle

    def get(self, fh: int) -> Handle:
        """The handle; OSError(EBADF) if there is none."""
        handle = self._handles.get(fh)
        if handle is None:
            raise bad_handle(fh)
        return handle

    def pop(self, fh: int) -> Handle:
        """Forget the handle and return it; OSError(EBADF) if there is none."""
        handle = self._handles.pop(fh, None)
        if handle is None:
            raise bad_handle(fh)
        return handle

    def numbers(self) -> list[int]:
        """Every open handle number."""
        return list(self._handles)

    def count(self, kind: str) -> int:
        return sum(1 for handle in self._handles.values() if handle.kind == kind)

    def stats(self) -> dict[str, int]:
        return {"open_files": self.count(HANDLE_FILE), "open_dirs": self.count(HANDLE_DIRECTORY)}

    def clear(self) -> None:
        self._handles.clear()
