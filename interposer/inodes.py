"""The passthrough backend's inode table: identity, lookup counts and names.

The kernel refers to files by the inode numbers we hand out and tells us, with
``forget``, when it drops its references; an entry lives exactly as long as its
lookup count is positive.  Each entry holds an ``O_PATH`` descriptor of the
backing object, which pins it: its backing inode number cannot be reused while
the kernel may still name it, and operations reach it without a path that
could be raced.

FUSE inode numbers are the backing ``st_ino`` for objects on the backing root's
device, so ``ls -i``, ``find -samefile`` and hard-link detection in tar or
rsync see the same numbers as on the native directory.  Objects on other
devices (mounts inside the backing tree) get numbers from a private range.

The table also records every name under which an entry was seen, so that an
inode resolves to a path for tracing and fault matching; renames of a parent
need no update because paths are built by walking parents.
"""

from __future__ import annotations

import errno
import os

import pyfuse3

ROOT_INODE: int = pyfuse3.ROOT_INODE
FOREIGN_INODE_BASE = 1 << 63
"""Inode numbers at and above this are handed out for objects on other devices."""
DELETED_SUFFIX = " (deleted)"
_MAX_DEPTH = 4096

Name = tuple[int, bytes]
"""A directory entry: (parent inode, name)."""


class Inode:
    """One object the kernel knows, with the names it was seen under (first = primary)."""

    __slots__ = ("ino", "fd", "dev", "backing_ino", "lookups", "names", "deleted_path")

    def __init__(self, ino: int, fd: int, st: os.stat_result) -> None:
        self.ino = ino
        self.fd = fd
        self.dev = st.st_dev
        self.backing_ino = st.st_ino
        self.lookups = 0
        self.names: list[Name] = []
        self.deleted_path: str | None = None


class InodeTable:
    """Maps FUSE inode numbers to backing objects and back, honouring lookup counts."""

    def __init__(self, root_fd: int) -> None:
        st = os.fstat(root_fd)
        self._root_dev = st.st_dev
        self._root_backing_ino = st.st_ino
        root = Inode(ROOT_INODE, root_fd, st)
        root.lookups = 1
        self._entries: dict[int, Inode] = {ROOT_INODE: root}
        self._dentries: dict[Name, int] = {}
        self._foreign: dict[tuple[int, int], int] = {}
        self._next_foreign = FOREIGN_INODE_BASE

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, ino: int) -> Inode:
        """The entry for an inode the kernel names; ESTALE if the kernel names one we never gave."""
        try:
            return self._entries[ino]
        except KeyError:
            raise OSError(errno.ESTALE, f"unknown inode {ino}") from None

    def number_for(self, st: os.stat_result) -> int:
        """The FUSE inode number for a backing object, stable while the object is referenced."""
        if st.st_dev == self._root_dev:
            if st.st_ino == self._root_backing_ino:
                return ROOT_INODE
            if st.st_ino > ROOT_INODE and st.st_ino < FOREIGN_INODE_BASE:
                return st.st_ino
        key = (st.st_dev, st.st_ino)
        ino = self._foreign.get(key)
        if ino is None:
            ino = self._next_foreign
            self._next_foreign += 1
            self._foreign[key] = ino
        return ino

    def acquire(self, parent: int, name: bytes, fd: int, st: os.stat_result) -> Inode:
        """Count one more kernel reference to the object found as ``name`` in ``parent``.

        ``fd`` is a fresh O_PATH descriptor of that object; the table keeps it for
        a new entry and closes it when the object is already known.
        """
        ino = self.number_for(st)
        entry = self._entries.get(ino)
        if entry is None:
            entry = Inode(ino, fd, st)
            self._entries[ino] = entry
        else:
            os.close(fd)
        entry.lookups += 1
        if name not in (b".", b"..") and parent != ino:
            self._add_name(entry, (parent, name))
        return entry

    def add_reference(self, entry: Inode, parent: int, name: bytes) -> None:
        """Count one more kernel reference to a known entry reached under a new name (link)."""
        entry.lookups += 1
        self._add_name(entry, (parent, name))

    def forget(self, ino: int, count: int) -> None:
        """Drop ``count`` kernel references; the last one closes the descriptor and frees the entry."""
        entry = self._entries.get(ino)
        if entry is None or ino == ROOT_INODE:
            return
        entry.lookups -= count
        if entry.lookups > 0:
            return
        del self._entries[ino]
        for name in entry.names:
            if self._dentries.get(name) == ino:
                del self._dentries[name]
        if ino >= FOREIGN_INODE_BASE:
            self._foreign.pop((entry.dev, entry.backing_ino), None)
        os.close(entry.fd)

    def child(self, parent: int, name: bytes) -> Inode | None:
        """The known entry behind a directory entry, if the table has seen it."""
        ino = self._dentries.get((parent, name))
        return None if ino is None else self._entries.get(ino)

    def removed(self, parent: int, name: bytes) -> None:
        """A name went away (unlink, rmdir, replaced by rename); its last name marks the entry deleted."""
        ino = self._dentries.pop((parent, name), None)
        entry = None if ino is None else self._entries.get(ino)
        if entry is None:
            return
        path = self.path_of_inode(entry.ino)
        entry.names.remove((parent, name))
        if not entry.names:
            entry.deleted_path = path

    def renamed(self, old: Name, new: Name, exchange: bool) -> None:
        """Move a name; with ``exchange`` the two names swap their objects."""
        moved = self._dentries.pop(old, None)
        if exchange:
            other = self._dentries.pop(new, None)
            if other is not None:
                self._replace_name(other, new, old)
        else:
            self.removed(*new)
        if moved is not None:
            self._replace_name(moved, old, new)

    def path_of_inode(self, ino: int) -> str:
        """The path of an inode below the mount root; deleted objects keep their last path, marked."""
        parts: list[str] = []
        for _ in range(_MAX_DEPTH):
            if ino == ROOT_INODE:
                return "/" + "/".join(reversed(parts))
            entry = self._entries.get(ino)
            if entry is None:
                return f"<inode {ino}>"
            name = self._live_name(entry)
            if name is None:
                base = entry.deleted_path or f"<inode {ino}>"
                rest = "/".join(reversed(parts))
                return (base.rstrip("/") + "/" + rest if rest else base) + DELETED_SUFFIX
            parts.append(name[1].decode("utf-8", "surrogateescape"))
            ino = name[0]
        return f"<inode {ino}>"

    def paths_of_inode(self, ino: int) -> list[str]:
        """Every known path of an inode (hard links), primary first."""
        entry = self._entries.get(ino)
        if entry is None or len(entry.names) < 2:
            return [self.path_of_inode(ino)]
        paths = []
        for parent, name in entry.names:
            parent_path = self.path_of_inode(parent)
            text = name.decode("utf-8", "surrogateescape")
            paths.append(("" if parent_path == "/" else parent_path) + "/" + text)
        return paths

    def _live_name(self, entry: Inode) -> Name | None:
        for name in entry.names:
            if name[0] == ROOT_INODE or name[0] in self._entries:
                return name
        return None

    def _add_name(self, entry: Inode, name: Name) -> None:
        previous = self._dentries.get(name)
        if previous == entry.ino:
            return
        if previous is not None:
            stale = self._entries.get(previous)
            if stale is not None and name in stale.names:
                stale.names.remove(name)
        self._dentries[name] = entry.ino
        entry.names.append(name)
        entry.deleted_path = None

    def _replace_name(self, ino: int, old: Name, new: Name) -> None:
        entry = self._entries.get(ino)
        if entry is None:
            return
        self._dentries[new] = ino
        if old in entry.names:
            entry.names[entry.names.index(old)] = new
        else:
            entry.names.append(new)
