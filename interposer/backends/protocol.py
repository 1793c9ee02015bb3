"""What every backend is to the rest of the interposer: the end of the pipeline, over one handle table."""

from __future__ import annotations

from typing import Protocol

from ..fuse.request import Reply, Request
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

    def close(self) -> None:
        """Release everything held; called once the session has ended."""
        ...
