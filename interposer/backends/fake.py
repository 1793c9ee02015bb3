"""The fake backend: a file system in memory, so a workload runs unchanged and nothing reaches the disk.

Metadata (the tree, modes, owners, times, links, xattrs) is kept exactly;
file data is either kept up to a memory cap (writes beyond it fail with
ENOSPC, like a full disk) or discarded, in which case only sizes are kept and
reads return zeros or a pattern.  The kernel checks permissions
(``default_permissions``), so this backend only keeps the tree consistent.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import time
from collections.abc import Awaitable, Callable

import pyfuse3

from ..config import CacheConfig, FakeConfig
from ..fuse.request import NONE, Reply, Request
from ..names import HANDLE_DIRECTORY, HANDLE_FILE, OpName
from ..pathnames import DELETED_SUFFIX, child_path
from . import syscalls
from .handles import Handle, HandleTable
from .protocol import without_xattrs

ROOT = pyfuse3.ROOT_INODE
_PATTERN = bytes(range(256))
_BLOCK = 4096


def _error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class Node:
    """One object: its attributes, and its children, data or target by type."""

    __slots__ = (
        "atime",
        "children",
        "ctime",
        "data",
        "gid",
        "ino",
        "lookups",
        "mode",
        "mtime",
        "names",
        "opens",
        "rdev",
        "size",
        "subdirs",
        "target",
        "uid",
        "xattrs",
    )

    def __init__(self, ino: int, mode: int, uid: int, gid: int) -> None:
        now = time.time_ns()
        self.ino = ino
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.rdev = 0
        self.size = 0
        self.atime = self.mtime = self.ctime = now
        self.children: dict[bytes, int] | None = {} if stat.S_ISDIR(mode) else None
        self.subdirs = 0
        """How many of a directory's children are directories: its link count is 2 + this, kept as they change."""
        self.data = bytearray()
        self.target = b""
        self.xattrs: dict[bytes, bytes] = {}
        self.names: list[tuple[int, bytes]] = []
        """(parent, name) of every link, the first being the primary path."""
        self.lookups = 0
        self.opens = 0

    def touch(self, *, modified: bool = True) -> None:
        now = time.time_ns()
        self.ctime = now
        if modified:
            self.mtime = now


class FakeBackend:
    """Serves every FUSE request from memory."""

    def __init__(self, cache: CacheConfig, fake: FakeConfig, *, xattrs: bool = True) -> None:
        self._entry_timeout = cache.entry_timeout
        self._attr_timeout = cache.attr_timeout
        self._direct_io = cache.direct_io
        self._keep_cache = cache.keep_cache
        self._keep_data = fake.data == "keep"
        self._read_pattern = fake.read == "pattern"
        self._capacity = fake.memory_cap
        self.kept_bytes = 0
        self._numbers = itertools.count(ROOT + 1)
        self._handles = itertools.count(1)
        root = Node(ROOT, stat.S_IFDIR | 0o755, os.getuid(), os.getgid())
        self.nodes: dict[int, Node] = {ROOT: root}
        self.handles = HandleTable()
        self.handlers: dict[OpName, Callable[[Request], Awaitable[Reply]]] = {
            name: getattr(self, name.value) for name in OpName
        }
        if not xattrs:
            self.handlers = without_xattrs(self.handlers)

    async def __call__(self, request: Request) -> Reply:
        return await self.handlers[request.name](request)

    # -- what the adapter resolves a request with, and what status shows -----------------

    def path_of_inode(self, inode: int) -> str:
        paths = self.paths_of_inode(inode)
        return paths[0] if paths else f"<inode {inode}>{DELETED_SUFFIX}"

    def paths_of_inode(self, inode: int) -> list[str]:
        if inode == ROOT:
            return ["/"]
        node = self.nodes.get(inode)
        if node is None:
            return []
        return [child_path(self.path_of_inode(parent), name) for parent, name in node.names]

    def handle(self, fh: int) -> Handle:
        return self.handles.get(fh)

    def stats(self) -> dict[str, int]:
        return {
            "inodes": len(self.nodes),
            "inode_fds": 0,
            **self.handles.stats(),
            "fake_kept_bytes": self.kept_bytes,
        }

    def open_inode(self, inode: int, flags: int) -> int:
        raise _error(errno.ENOTSUP)  # data lives in memory: there is no file to give a descriptor of

    def close(self) -> None:
        self.nodes.clear()
        self.handles.clear()

    # -- helpers ------------------------------------------------------------------------

    def _node(self, inode: int) -> Node:
        node = self.nodes.get(inode)
        if node is None:
            raise _error(errno.ESTALE)
        return node

    def _directory(self, inode: int) -> tuple[Node, dict[bytes, int]]:
        node = self._node(inode)
        if node.children is None:
            raise _error(errno.ENOTDIR)
        return node, node.children

    def _attributes(self, node: Node) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = node.ino
        attrs.st_mode = node.mode
        if node.children is not None:
            attrs.st_nlink = 2 + node.subdirs
        else:
            attrs.st_nlink = len(node.names)
        attrs.st_uid = node.uid
        attrs.st_gid = node.gid
        attrs.st_rdev = node.rdev
        attrs.st_size = len(node.target) if stat.S_ISLNK(node.mode) else node.size
        attrs.st_blksize = _BLOCK
        attrs.st_blocks = (len(node.data) + 511) // 512
        attrs.st_atime_ns = node.atime
        attrs.st_mtime_ns = node.mtime
        attrs.st_ctime_ns = node.ctime
        attrs.entry_timeout = self._entry_timeout
        attrs.attr_timeout = self._attr_timeout
        return attrs

    def _looked_up(self, node: Node) -> pyfuse3.EntryAttributes:
        node.lookups += 1
        return self._attributes(node)

    def _new(self, op: Request, kind_and_mode: int) -> Node:
        """A new object named op.entry_name in directory op.inode, owned as the kernel would own it."""
        parent, children = self._directory(op.inode)
        if op.entry_name in children:
            raise _error(errno.EEXIST)
        gid = op.gid
        if parent.mode & stat.S_ISGID:
            gid = parent.gid
            if stat.S_ISDIR(kind_and_mode):
                kind_and_mode |= stat.S_ISGID
        node = Node(next(self._numbers), kind_and_mode, op.uid, gid)
        self.nodes[node.ino] = node
        self._attach(parent, op.entry_name, node)
        node.names.append((op.inode, op.entry_name))
        parent.touch()
        return node

    @staticmethod
    def _attach(parent: Node, name: bytes, node: Node) -> None:
        """Enter ``node`` in ``parent`` under ``name``, keeping the parent's count of subdirectories."""
        assert parent.children is not None
        parent.children[name] = node.ino
        if node.children is not None:
            parent.subdirs += 1

    def _detach(self, parent: Node, name: bytes) -> Node:
        """Remove ``name`` from ``parent``; the node it named stays in the table until collected."""
        assert parent.children is not None
        node = self.nodes[parent.children.pop(name)]
        if node.children is not None:
            parent.subdirs -= 1
        return node

    def _unlinked(self, parent: int, name: bytes, node: Node) -> None:
        node.names.remove((parent, name))
        node.touch(modified=False)
        self._collect(node)

    def _collect(self, node: Node) -> None:
        """Free an object nothing refers to any more: no name, no kernel reference, no open handle."""
        if not node.names and node.lookups <= 0 and node.opens <= 0 and node.ino != ROOT:
            self.kept_bytes -= len(node.data)
            del self.nodes[node.ino]

    def _resize(self, node: Node, size: int) -> None:
        if self._keep_data:
            if size > len(node.data):
                self._reserve(size - len(node.data))
                node.data.extend(bytes(size - len(node.data)))
            else:
                self.kept_bytes -= len(node.data) - size
                del node.data[size:]
        node.size = size

    def _reserve(self, count: int) -> None:
        if self.kept_bytes + count > self._capacity:
            raise _error(errno.ENOSPC)
        self.kept_bytes += count

    def _file_info(self, fh: int, flags: int) -> pyfuse3.FileInfo:
        direct = self._direct_io or bool(flags & os.O_DIRECT)
        return pyfuse3.FileInfo(fh=fh, direct_io=direct, keep_cache=self._keep_cache)

    # -- inode operations ---------------------------------------------------------------

    async def lookup(self, op: Request) -> Reply:
        parent, children = self._directory(op.inode)
        name = op.entry_name
        if name == b".":
            return Reply(self._looked_up(parent))
        if name == b"..":
            return Reply(self._looked_up(self._node(parent.names[0][0] if parent.names else ROOT)))
        ino = children.get(name)
        if ino is None:
            raise _error(errno.ENOENT)
        return Reply(self._looked_up(self.nodes[ino]))

    async def forget(self, op: Request) -> Reply:
        for ino, count in op.forgets:
            node = self.nodes.get(ino)
            if node is not None:
                node.lookups -= count
                self._collect(node)
        return NONE

    async def getattr(self, op: Request) -> Reply:
        return Reply(self._attributes(self._node(op.inode)))

    async def setattr(self, op: Request) -> Reply:
        node = self._node(op.inode)
        attr, fields = op.attr, op.fields
        assert attr is not None
        assert fields is not None
        if fields.update_size:
            if node.children is not None:
                raise _error(errno.EISDIR)
            self._resize(node, attr.st_size)
            node.touch()
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            node.uid = attr.st_uid
        if fields.update_gid:
            node.gid = attr.st_gid
        if fields.update_atime:
            node.atime = attr.st_atime_ns
        if fields.update_mtime:
            node.mtime = attr.st_mtime_ns
        node.ctime = time.time_ns()  # every setattr changes ctime, one that sets nothing included
        return Reply(self._attributes(node))

    async def readlink(self, op: Request) -> Reply:
        node = self._node(op.inode)
        if not stat.S_ISLNK(node.mode):
            raise _error(errno.EINVAL)
        return Reply(node.target)

    async def symlink(self, op: Request) -> Reply:
        node = self._new(op, stat.S_IFLNK | 0o777)
        node.target = op.target
        return Reply(self._looked_up(node))

    async def mknod(self, op: Request) -> Reply:
        node = self._new(op, op.mode)
        node.rdev = op.rdev
        return Reply(self._looked_up(node))

    async def mkdir(self, op: Request) -> Reply:
        return Reply(self._looked_up(self._new(op, stat.S_IFDIR | stat.S_IMODE(op.mode))))

    async def unlink(self, op: Request) -> Reply:
        parent, children = self._directory(op.inode)
        ino = children.get(op.entry_name)
        if ino is None:
            raise _error(errno.ENOENT)
        if self.nodes[ino].children is not None:
            raise _error(errno.EISDIR)
        node = self._detach(parent, op.entry_name)
        parent.touch()
        self._unlinked(op.inode, op.entry_name, node)
        return NONE

    async def rmdir(self, op: Request) -> Reply:
        parent, children = self._directory(op.inode)
        ino = children.get(op.entry_name)
        if ino is None:
            raise _error(errno.ENOENT)
        target = self.nodes[ino]
        if target.children is None:
            raise _error(errno.ENOTDIR)
        if target.children:
            raise _error(errno.ENOTEMPTY)
        node = self._detach(parent, op.entry_name)
        parent.touch()
        self._unlinked(op.inode, op.entry_name, node)
        return NONE

    async def rename(self, op: Request) -> Reply:
        old_parent, old_children = self._directory(op.inode)
        new_parent, new_children = self._directory(op.new_parent)
        moving = old_children.get(op.entry_name)
        if moving is None:
            raise _error(errno.ENOENT)
        source = self.nodes[moving]
        replaced = new_children.get(op.new_name)
        if op.flags & syscalls.RENAME_EXCHANGE:
            if replaced is None:
                raise _error(errno.ENOENT)
            target = self.nodes[replaced]
            self._detach(old_parent, op.entry_name)
            self._detach(new_parent, op.new_name)
            self._attach(old_parent, op.entry_name, target)
            self._attach(new_parent, op.new_name, source)
            source.names[source.names.index((op.inode, op.entry_name))] = (op.new_parent, op.new_name)
            target.names[target.names.index((op.new_parent, op.new_name))] = (op.inode, op.entry_name)
        else:
            if replaced is not None:
                if op.flags & syscalls.RENAME_NOREPLACE:
                    raise _error(errno.EEXIST)
                if replaced == moving:
                    return NONE
                target = self.nodes[replaced]
                if target.children is not None and source.children is None:
                    raise _error(errno.EISDIR)
                if target.children is None and source.children is not None:
                    raise _error(errno.ENOTDIR)
                if target.children:
                    raise _error(errno.ENOTEMPTY)
                self._detach(new_parent, op.new_name)
                self._unlinked(op.new_parent, op.new_name, target)
            self._detach(old_parent, op.entry_name)
            self._attach(new_parent, op.new_name, source)
            source.names[source.names.index((op.inode, op.entry_name))] = (op.new_parent, op.new_name)
        source.touch(modified=False)
        old_parent.touch()
        new_parent.touch()
        return NONE

    async def link(self, op: Request) -> Reply:
        node = self._node(op.inode)
        parent, children = self._directory(op.new_parent)
        if op.new_name in children:
            raise _error(errno.EEXIST)
        self._attach(parent, op.new_name, node)
        node.names.append((op.new_parent, op.new_name))
        node.touch(modified=False)
        parent.touch()
        return Reply(self._looked_up(node))

    # -- file handles -------------------------------------------------------------------

    def _opened(self, node: Node, op: Request) -> int:
        fh = next(self._handles)
        self.handles.add(fh, Handle(HANDLE_FILE, node.ino, (op.pid, op.uid, op.gid), op.flags))
        node.opens += 1
        return fh

    async def open(self, op: Request) -> Reply:
        node = self._node(op.inode)
        if op.flags & os.O_TRUNC and node.size:  # libfuse asks for atomic O_TRUNC: the open truncates
            self._resize(node, 0)
            node.touch()
        fh = self._opened(node, op)
        return Reply(self._file_info(fh, op.flags), handle=fh)

    async def create(self, op: Request) -> Reply:
        node = self._new(op, stat.S_IFREG | stat.S_IMODE(op.mode))
        fh = self._opened(node, op)
        return Reply((self._file_info(fh, op.flags), self._looked_up(node)), handle=fh)

    async def read(self, op: Request) -> Reply:
        node = self._node(op.inode)
        end = min(node.size, op.offset + op.size)
        if end <= op.offset:
            return Reply(b"")
        if self._keep_data:
            data = bytes(node.data[op.offset : end])
        elif self._read_pattern:
            data = _pattern(op.offset, end - op.offset)
        else:
            data = bytes(end - op.offset)
        return Reply(data, transferred=len(data))

    async def write(self, op: Request) -> Reply:
        node = self._node(op.inode)
        offset = node.size if self.handles.get(op.fh).flags & os.O_APPEND else op.offset
        end = offset + len(op.data)
        if end > node.size:
            self._resize(node, end)
        if self._keep_data:
            node.data[offset:end] = op.data
        node.touch()
        return Reply(len(op.data), transferred=len(op.data))

    async def flush(self, op: Request) -> Reply:
        return NONE

    async def release(self, op: Request) -> Reply:
        handle = self.handles.pop(op.fh)
        node = self.nodes.get(handle.inode)
        if node is not None:
            node.opens -= 1
            self._collect(node)
        return NONE

    async def fsync(self, op: Request) -> Reply:
        return NONE

    # -- directory handles --------------------------------------------------------------

    async def opendir(self, op: Request) -> Reply:
        self._directory(op.inode)
        fh = next(self._handles)
        self.handles.add(fh, Handle(HANDLE_DIRECTORY, op.inode, (op.pid, op.uid, op.gid)))
        return Reply(fh, handle=fh)

    async def readdir(self, op: Request) -> Reply:
        """Entries from ``op.offset`` on, from a snapshot taken at offset 0 (as the passthrough does)."""
        handle = self.handles.get(op.fh)
        directory, children = self._directory(handle.inode)
        if op.offset == 0 or handle.listing is None:
            handle.listing = [b".", b"..", *children]
        listing = handle.listing
        reply_entry = op.reply_entry
        assert reply_entry is not None
        for index in range(op.offset, len(listing)):
            name = listing[index]
            if name in (b".", b".."):
                node = directory if name == b"." or not directory.names else self.nodes[directory.names[0][0]]
                if not reply_entry(name, self._attributes(node), index + 1):
                    break
                continue
            child = children.get(name)
            if child is None:
                continue
            node = self.nodes[child]
            if not reply_entry(name, self._attributes(node), index + 1):
                break
            node.lookups += 1
        return NONE

    async def releasedir(self, op: Request) -> Reply:
        self.handles.pop(op.fh)
        return NONE

    async def fsyncdir(self, op: Request) -> Reply:
        return NONE

    # -- file system and extended attributes --------------------------------------------

    async def statfs(self, op: Request) -> Reply:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = _BLOCK
        data.f_blocks = self._capacity // _BLOCK
        data.f_bfree = data.f_bavail = (self._capacity - self.kept_bytes) // _BLOCK
        data.f_files = 1 << 32
        data.f_ffree = data.f_favail = (1 << 32) - len(self.nodes)
        data.f_namemax = 255
        return Reply(data)

    async def setxattr(self, op: Request) -> Reply:
        node = self._node(op.inode)
        node.xattrs[op.xattr_name] = bytes(op.data)
        node.touch(modified=False)
        return NONE

    async def getxattr(self, op: Request) -> Reply:
        value = self._node(op.inode).xattrs.get(op.xattr_name)
        if value is None:
            raise _error(errno.ENODATA)
        return Reply(value, transferred=len(value))

    async def listxattr(self, op: Request) -> Reply:
        return Reply(list(self._node(op.inode).xattrs))

    async def removexattr(self, op: Request) -> Reply:
        node = self._node(op.inode)
        if node.xattrs.pop(op.xattr_name, None) is None:
            raise _error(errno.ENODATA)
        node.touch(modified=False)
        return NONE


def _pattern(offset: int, count: int) -> bytes:
    """``count`` bytes of the 0..255 pattern starting at ``offset``, built in bulk (bytes repeat, then a slice)."""
    start = offset % 256
    return (_PATTERN * ((start + count) // 256 + 1))[start : start + count]
