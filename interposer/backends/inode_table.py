"""The passthrough backend's inode table: identity, lookup counts, names and descriptors.

The kernel refers to files by the inode numbers we hand out and tells us, with
``forget``, when it drops its references; an entry lives exactly as long as its
lookup count is positive.

FUSE inode numbers are the backing ``st_ino`` for objects on the backing root's
device, so ``ls -i``, ``find -samefile`` and hard-link detection in tar or
rsync see the same numbers as on the native directory.  Objects on other
devices (mounts inside the backing tree) get numbers from a private range.

Descriptors.  The kernel may keep any number of inodes referenced, far more
than a process may hold descriptors, so an entry does not hold one by default.
A lookup records the object with a single ``fstatat``.  When an operation needs
the object, ``fd()`` opens an ``O_PATH`` descriptor relative to the parent
(checking that the object is still the one recorded) and keeps it in a bounded
LRU pool.  A descriptor evicted from the pool is replaced by the kernel's file
handle for the object, so reopening it reaches exactly that object, wherever it
has been renamed, or fails with ESTALE.  Objects whose last name is gone
(unlinked while the kernel still refers to them) keep their descriptor, since
no name can reach them again.

The table records every name under which an entry was seen, so an inode
resolves to a path for tracing and fault matching; renames of a parent need no
update because paths are built by walking parents.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections import OrderedDict

import pyfuse3

from ..pathnames import DELETED_SUFFIX, child_path
from . import syscalls

log = logging.getLogger(__name__)

ROOT_INODE: int = pyfuse3.ROOT_INODE
FOREIGN_INODE_BASE = 1 << 63
"""Inode numbers at and above this are handed out for objects on other devices."""
O_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_DEPTH = 4096
_MAX_CACHED_PATHS = 4096

Name = tuple[int, bytes]
"""A directory entry: (parent inode, name)."""


class Inode:
    """One object the kernel knows, with the names it was seen under (first = primary)."""

    __slots__ = ("backing_ino", "deleted_path", "dev", "fd", "handle", "ino", "is_dir", "lookups", "names")

    def __init__(self, ino: int, st: os.stat_result) -> None:
        self.ino = ino
        self.fd = -1
        self.handle: bytes | None = None
        self.dev = st.st_dev
        self.backing_ino = st.st_ino
        self.is_dir = stat.S_ISDIR(st.st_mode)
        self.lookups = 0
        self.names: list[Name] = []
        self.deleted_path: str | None = None


class InodeTable:
    """Maps FUSE inode numbers to backing objects and back, honouring lookup counts."""

    def __init__(self, root: str, max_open: int) -> None:
        root_fd = os.open(root, O_PATH_FLAGS | os.O_DIRECTORY)
        st = os.fstat(root_fd)
        # open_by_handle_at wants a real (not O_PATH) descriptor on the file system.
        self._mount_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._root_dev = st.st_dev
        self._root_backing_ino = st.st_ino
        self.root = Inode(ROOT_INODE, st)
        self.root.fd = root_fd
        self.root.lookups = 1
        self._entries: dict[int, Inode] = {ROOT_INODE: self.root}
        self._dentries: dict[Name, int] = {}
        self._foreign: dict[tuple[int, int], int] = {}
        self._next_foreign = FOREIGN_INODE_BASE
        self._open: OrderedDict[int, Inode] = OrderedDict()
        self._max_open = max(max_open, 16)
        self._handles_supported = True
        self._paths: dict[int, str] = {}
        """Resolved paths, emptied by any change of names: tracing and fault rules ask for the same
        few paths over and over (every read of an open file), and a walk of the parents costs microseconds."""

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def open_descriptors(self) -> int:
        """Descriptors held in the pool (the root's and pinned ones not counted)."""
        return len(self._open)

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
            if ROOT_INODE < st.st_ino < FOREIGN_INODE_BASE:
                return st.st_ino
        key = (st.st_dev, st.st_ino)
        ino = self._foreign.get(key)
        if ino is None:
            ino = self._next_foreign
            self._next_foreign += 1
            self._foreign[key] = ino
        return ino

    # -- descriptors -------------------------------------------------------------------

    def fd(self, entry: Inode) -> int:
        """An O_PATH descriptor of the entry's object, opened on demand and kept in the LRU pool."""
        fd = entry.fd
        if fd >= 0:
            try:  # noqa: SIM105 - free when nothing is raised; this runs on every request
                self._open.move_to_end(entry.ino)
            except KeyError:
                pass  # the root and pinned entries live outside the pool
            return fd
        return self._reopen(entry)

    def _reopen(self, entry: Inode) -> int:
        if entry.handle is not None:
            fd = syscalls.open_file_handle(self._mount_fd, entry.handle, O_PATH_FLAGS)
        else:
            name = self._live_name(entry)
            if name is None:
                raise OSError(errno.ESTALE, f"inode {entry.ino} has no name left to reach it by")
            fd = os.open(name[1], O_PATH_FLAGS, dir_fd=self.fd(self._entries[name[0]]))
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (entry.dev, entry.backing_ino):
                os.close(fd)
                raise OSError(errno.ESTALE, f"{self.path_of_inode(entry.ino)} was replaced outside the mount")
        entry.fd = fd
        self._open[entry.ino] = entry
        while len(self._open) > self._max_open:
            self._evict_oldest()
        return fd

    def _evict_oldest(self) -> None:
        _, victim = self._open.popitem(last=False)
        # A handle only means something on its own file system, and handles are opened against the
        # backing root's: objects on other devices are reopened by name, with the identity check.
        if victim.handle is None and self._handles_supported and victim.dev == self._root_dev:
            try:
                victim.handle = syscalls.file_handle(victim.fd)
            except OSError as exc:
                self._handles_supported = False
                log.warning("backing file system gives no file handles (%s); reopening by name", exc.strerror)
        if victim.handle is None and not victim.names:
            return  # unreachable by name: keep the descriptor, outside the pool
        os.close(victim.fd)
        victim.fd = -1

    def pin(self, parent: int, name: bytes) -> None:
        """Make sure a known object about to lose a name stays reachable afterwards."""
        ino = self._dentries.get((parent, name))
        entry = None if ino is None else self._entries.get(ino)
        if entry is not None and entry.fd < 0:
            self.fd(entry)  # a handle would not do: file systems refuse handles of unlinked inodes

    # -- lookup counts -----------------------------------------------------------------

    def acquire(self, parent: int, name: bytes, st: os.stat_result) -> Inode:
        """Count one more kernel reference to the object ``st`` found as ``name`` in ``parent``."""
        ino = self.number_for(st)
        entry = self._entries.get(ino)
        if entry is None:
            entry = Inode(ino, st)
            self._entries[ino] = entry
        entry.lookups += 1
        if name not in (b".", b"..") and parent != ino:
            self._add_name(entry, (parent, name))
        return entry

    def add_reference(self, entry: Inode, parent: int, name: bytes) -> None:
        """Count one more kernel reference to a known entry reached under a new name (link)."""
        entry.lookups += 1
        self._add_name(entry, (parent, name))

    def forget(self, ino: int, count: int) -> None:
        """Drop ``count`` kernel references; the last one frees the entry and its descriptor."""
        entry = self._entries.get(ino)
        if entry is None or ino == ROOT_INODE:
            return
        entry.lookups -= count
        if entry.lookups > 0:
            return
        del self._entries[ino]
        self._forget_path(entry)
        self._open.pop(ino, None)
        for name in entry.names:
            if self._dentries.get(name) == ino:
                del self._dentries[name]
        if ino >= FOREIGN_INODE_BASE:
            self._foreign.pop((entry.dev, entry.backing_ino), None)
        if entry.fd >= 0:
            os.close(entry.fd)

    # -- names -------------------------------------------------------------------------

    def removed(self, parent: int, name: bytes) -> None:
        """A name went away (unlink, rmdir, replaced by rename); its last name marks the entry deleted."""
        ino = self._dentries.pop((parent, name), None)
        entry = None if ino is None else self._entries.get(ino)
        if entry is None:
            return
        path = self.path_of_inode(entry.ino)
        self._forget_path(entry)
        entry.names.remove((parent, name))
        if not entry.names:
            entry.deleted_path = path
            if entry.fd >= 0:
                self._open.pop(entry.ino, None)  # pinned: no name can reopen it

    def renamed(self, old: Name, new: Name, exchange: bool) -> None:
        """Move a name; with ``exchange`` the two names swap their objects."""
        self._paths.clear()
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
        path = self._paths.get(ino)
        if path is None:
            path = self._walk(ino)
            if path.startswith("/"):  # not an inode the table does not know (yet)
                if len(self._paths) >= _MAX_CACHED_PATHS:
                    self._paths.clear()
                self._paths[ino] = path
        return path

    def _walk(self, ino: int) -> str:
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
        return [child_path(self.path_of_inode(parent), name) for parent, name in entry.names]

    def close(self) -> None:
        """Close every descriptor the table holds; called once the session has ended."""
        for entry in self._entries.values():
            if entry.fd >= 0:
                os.close(entry.fd)
                entry.fd = -1
        self._entries.clear()
        self._open.clear()
        os.close(self._mount_fd)

    def _forget_path(self, entry: Inode) -> None:
        """An entry's name changed: its cached path goes, and a directory's takes its descendants' with it."""
        if entry.is_dir:
            self._paths.clear()
        else:
            self._paths.pop(entry.ino, None)

    def _live_name(self, entry: Inode) -> Name | None:
        for name in entry.names:
            if name[0] == ROOT_INODE or name[0] in self._entries:
                return name
        return None

    def _add_name(self, entry: Inode, name: Name) -> None:
        previous = self._dentries.get(name)
        if previous == entry.ino:
            return
        if previous is not None or entry.names or entry.deleted_path is not None:
            self._paths.clear()  # another name of a known object, or one that was deleted
        if previous is not None:
            stale = self._entries.get(previous)
            if stale is not None and name in stale.names:
                stale.names.remove(name)
        self._dentries[name] = entry.ino
        entry.names.append(name)
        entry.deleted_path = None

    def _replace_name(self, ino: int, old: Name, new: Name) -> None:
        self._paths.clear()
        entry = self._entries.get(ino)
        if entry is None:
            return
        self._dentries[new] = ino
        if old in entry.names:
            entry.names[entry.names.index(old)] = new
        else:
            entry.names.append(new)
