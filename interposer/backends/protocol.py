"""What every backend is to the rest of the interposer: the end of the pipeline, over one handle table."""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..fuse.request import Reply, Request
from ..names import OpName
from .handles import Handle, HandleTable


class Backend(Protocol):
    """Owns the data: carries out each request and keeps the inode and handle tables it needs.

    Both backends (passthrough, fake) implement it; nothing else needs to know
    which one serves a mount.
    """

    handles: HandleTable

    async def __call__(self, request: Request) -> Reply:
        """Carry out a resolved request; raise OSError with the errno the caller should see."""
        ...

    def path_of_inode(self, inode: int) -> str:
        """The inode's primary path below the mount root (marked deleted once it has no name left)."""
        ...

    def paths_of_inode(self, inode: int) -> list[str]:
        """Every path the inode has (hard links)."""
        ...

    def handle(self, fh: int) -> Handle:
        """The open handle ``fh``; OSError(EBADF) if there is none."""
        ...

    def stats(self) -> dict[str, int]:
        """Table sizes for the mount's status."""
        ...

    def open_inode(self, inode: int, flags: int) -> int:
        """A new OS descriptor of a known inode's file, which the caller closes.

        For a layer that must reach the stored bytes outside any request: the crash journal reads what a write
        will overwrite and puts it back on a drop, even after the kernel closed every handle.  A backend that
        keeps no files (the fake) raises OSError(ENOTSUP); the config model lets only the passthrough backend
        enable the journal.
        """
        ...

    def close(self) -> None:
        """Release everything held; called once the session has ended."""
        ...


XATTRS_OFF = {
    OpName.GETXATTR: errno.ENOSYS,
    OpName.LISTXATTR: errno.ENOSYS,
    OpName.SETXATTR: errno.ENOTSUP,
    OpName.REMOVEXATTR: errno.ENOTSUP,
}
"""How a backend answers extended attributes when ``fuse.xattrs`` is false.  ENOSYS makes the kernel stop sending
that operation for the connection (fs/fuse/xattr.c: ``fc->no_getxattr``, ``fc->no_listxattr``) and answer
EOPNOTSUPP itself, which ends the security.capability probe before every write.  Setting and removing answer
ENOTSUP instead, not ENOSYS, so the kernel keeps sending them: the trace-context announcement is a setxattr."""


async def refuse_xattr(request: Request) -> Reply:
    """The handler of every xattr operation when ``fuse.xattrs`` is false (``XATTRS_OFF``)."""
    raise OSError(XATTRS_OFF[request.name], "extended attributes are off (fuse.xattrs: false)")


def without_xattrs(
    handlers: dict[OpName, Callable[[Request], Awaitable[Reply]]],
) -> dict[OpName, Callable[[Request], Awaitable[Reply]]]:
    """A backend's handler table with every xattr operation refused (``XATTRS_OFF``)."""
    return handlers | dict.fromkeys(XATTRS_OFF, refuse_xattr)
