"""Crash consistency: drop every write that was not fsynced, as a power loss would (after lazyfs).

While enabled, the journal keeps an undo record for each write and
truncation that reaches the backing file: the bytes it overwrote and the
file's size before.  ``fsync`` or ``fdatasync`` of a file makes its writes
durable and forgets their records.  ``drop`` replays the records of every
file backwards, so each file holds exactly what it held at its last sync,
and tells the kernel to forget its cached pages and attributes.

Memory grows with the data written and not yet synced; this is a test mode.
Metadata (creates, renames, unlinks) is not rolled back: a file created and
never synced is left empty.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import defaultdict

import pyfuse3
import trio

from ...backends.protocol import Backend
from ...fuse.pipeline import NextCall
from ...fuse.request import Notes, Reply, Request
from ...names import DIRECTION_WRITE, OpName

log = logging.getLogger(__name__)

_SYNCS = frozenset({OpName.FSYNC})


class UndoRecord:
    """What one change overwrote: ``old`` bytes at ``offset`` (none for a pure truncation) and the size before."""

    __slots__ = ("offset", "old", "size")

    def __init__(self, offset: int, old: bytes, size: int) -> None:
        self.offset = offset
        self.old = old
        self.size = size


class CrashJournal:
    """The innermost layer: sees exactly the writes that reach the backing file.

    It lives as long as the mount's ``crash`` section stays enabled: changing
    any other section at run time keeps it and its records.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._records: defaultdict[int, list[UndoRecord]] = defaultdict(list)
        self._descriptors: dict[int, int] = {}
        """A writable descriptor per file with records, so a drop can reach it even after the kernel forgot it."""

    def _descriptor(self, inode: int) -> int:
        """The journal's own read-write descriptor of a file (the handle may be write-only, or append)."""
        fd = self._descriptors.get(inode)
        if fd is None:
            fd = self._descriptors[inode] = self._backend.open_inode(inode, os.O_RDWR)
        return fd

    def _before(self, inode: int, offset: int, length: int | None) -> UndoRecord:
        """The bytes a change will overwrite (``length`` None: the whole file) and the size before it."""
        fd = self._descriptor(inode)
        size = os.fstat(fd).st_size
        return UndoRecord(offset, os.pread(fd, size if length is None else length, offset), size)

    def _forget(self, inode: int) -> None:
        self._records.pop(inode, None)
        fd = self._descriptors.pop(inode, None)
        if fd is not None:
            os.close(fd)

    async def __call__(self, op: Request, notes: Notes, call_next: NextCall) -> Reply:
        name = op.name
        if op.traits.direction is DIRECTION_WRITE:
            record = self._before(op.inode, op.offset, len(op.data))
        elif name is OpName.SETATTR and op.fields is not None and op.fields.update_size:
            record = self._before(op.inode, 0, None)  # the whole old content: cut or extended
        else:
            reply = await call_next(op, notes)
            if name in _SYNCS:
                self._forget(op.inode)
            return reply
        reply = await call_next(op, notes)
        self._records[op.inode].append(record)
        return reply

    def pending(self) -> dict[str, int]:
        """How many files, changes and bytes a drop would undo."""
        records = [record for records in self._records.values() for record in records]
        return {
            "files": len(self._records),
            "changes": len(records),
            "bytes": sum(len(record.old) for record in records),
        }

    async def drop(self) -> dict[str, int]:
        """Undo every change not synced since; return what was undone."""
        undone = self.pending()
        for inode, changes in list(self._records.items()):
            fd = self._descriptors[inode]
            for record in reversed(changes):
                os.pwrite(fd, record.old, record.offset)
                os.ftruncate(fd, record.size)
            self._forget(inode)
            # The kernel may wait on a request for this inode to finish: not from the request thread.
            with contextlib.suppress(OSError):  # ENOENT: the kernel has no cache of it left to drop
                await trio.to_thread.run_sync(pyfuse3.invalidate_inode, inode, False)
        log.warning("crash drop: undid %s", undone)
        return undone

    def close(self) -> None:
        for inode in list(self._descriptors):
            self._forget(inode)
