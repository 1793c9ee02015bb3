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
from typing import Any

import pyfuse3

from ..config import CacheConfig, FakeConfig
from ..fuse.request import Op
from ..names import OpName
from ..pathnames import DELETED_SUFFIX, child_path
from . import syscalls

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

    def __init__(self, cache: CacheConfig, fake: FakeConfig) -> None:
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
        self.files: dict[int, tuple[int, int, tuple[int, int]]] = {}
        """File handle -> (inode, open flags, the opener's pid and uid)."""
        self.dirs: dict[int, tuple[int, list[bytes]]] = {}
        """Directory handle -> (inode, the listing snapshot taken at offset 0)."""
        self.handlers: dict[OpName, Callable[[Op], Awaitable[Any]]] = {
            name: getattr(self, name.value) for name in OpName
        }

    async def __call__(self, op: Op) -> Any:
        return await self.handlers[op.name](op)

    # -- what an Op needs to resolve its path, and what status shows ---------------------

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

    def inode_of_handle(self, fh: int) -> int:
        return self.files.get(fh, (0, 0, (0, 0)))[0]

    def opener_of_handle(self, fh: int) -> tuple[int, int]:
        return self.files.get(fh, (0, 0, (0, 0)))[2]

    def inode_of_dir_handle(self, fh: int) -> int:
        return self.dirs.get(fh, (0, []))[0]

    def stats(self) -> dict[str, int]:
        return {
            "inodes": len(self.nodes),
            "inode_fds": 0,
            "open_files": len(self.files),
            "open_dirs": len(self.dirs),
            "fake_kept_bytes": self.kept_bytes,
        }

    def close(self) -> None:
        self.nodes.clear()
        self.files.clear()
        self.dirs.clear()

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
            attrs.st_nlink = 2 + sum(1 for ino in node.children.values() if self.nodes[ino].children is not None)
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

    def _new(self, op: Op, kind_and_mode: int) -> Node:
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
        children[op.entry_name] = node.ino
        node.names.append((op.inode, op.entry_name))
        parent.touch()
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

    async def lookup(self, op: Op) -> pyfuse3.EntryAttributes:
        parent, children = self._directory(op.inode)
        name = op.entry_name
        if name == b".":
            return self._looked_up(parent)
        if name == b"..":
            return self._looked_up(self._node(parent.names[0][0] if parent.names else ROOT))
        ino = children.get(name)
        if ino is None:
            raise _error(errno.ENOENT)
        return self._looked_up(self.nodes[ino])

    async def forget(self, op: Op) -> None:
        for ino, count in op.forgets:
            node = self.nodes.get(ino)
            if node is not None:
                node.lookups -= count
                self._collect(node)

    async def getattr(self, op: Op) -> pyfuse3.EntryAttributes:
        return self._attributes(self._node(op.inode))

    async def setattr(self, op: Op) -> pyfuse3.EntryAttributes:
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
        node.ctime = time.time_ns()
        return self._attributes(node)

    async def readlink(self, op: Op) -> bytes:
        node = self._node(op.inode)
        if not stat.S_ISLNK(node.mode):
            raise _error(errno.EINVAL)
        return node.target

    async def symlink(self, op: Op) -> pyfuse3.EntryAttributes:
        node = self._new(op, stat.S_IFLNK | 0o777)
        node.target = op.target
        return self._looked_up(node)

    async def mknod(self, op: Op) -> pyfuse3.EntryAttributes:
        node = self._new(op, op.mode)
        node.rdev = op.rdev
        return self._looked_up(node)

    async def mkdir(self, op: Op) -> pyfuse3.EntryAttributes:
        return self._looked_up(self._new(op, stat.S_IFDIR | stat.S_IMODE(op.mode)))

    async def unlink(self, op: Op) -> None:
        parent, children = self._directory(op.inode)
        ino = children.get(op.entry_name)
        if ino is None:
            raise _error(errno.ENOENT)
        node = self.nodes[ino]
        if node.children is not None:
            raise _error(errno.EISDIR)
        del children[op.entry_name]
        parent.touch()
        self._unlinked(op.inode, op.entry_name, node)

    async def rmdir(self, op: Op) -> None:
        parent, children = self._directory(op.inode)
        ino = children.get(op.entry_name)
        if ino is None:
            raise _error(errno.ENOENT)
        node = self.nodes[ino]
        if node.children is None:
            raise _error(errno.ENOTDIR)
        if node.children:
            raise _error(errno.ENOTEMPTY)
        del children[op.entry_name]
        parent.touch()
        self._unlinked(op.inode, op.entry_name, node)

    async def rename(self, op: Op) -> None:
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
            old_children[op.entry_name], new_children[op.new_name] = replaced, moving
            source.names[source.names.index((op.inode, op.entry_name))] = (op.new_parent, op.new_name)
            target.names[target.names.index((op.new_parent, op.new_name))] = (op.inode, op.entry_name)
        else:
            if replaced is not None:
                if op.flags & syscalls.RENAME_NOREPLACE:
                    raise _error(errno.EEXIST)
                if replaced == moving:
                    return
                target = self.nodes[replaced]
                if target.children is not None and source.children is None:
                    raise _error(errno.EISDIR)
                if target.children is None and source.children is not None:
                    raise _error(errno.ENOTDIR)
                if target.children:
                    raise _error(errno.ENOTEMPTY)
                self._unlinked(op.new_parent, op.new_name, target)
            del old_children[op.entry_name]
            new_children[op.new_name] = moving
            source.names[source.names.index((op.inode, op.entry_name))] = (op.new_parent, op.new_name)
        source.touch(modified=False)
        old_parent.touch()
        new_parent.touch()

    async def link(self, op: Op) -> pyfuse3.EntryAttributes:
        node = self._node(op.inode)
        parent, children = self._directory(op.new_parent)
        if op.new_name in children:
            raise _error(errno.EEXIST)
        children[op.new_name] = node.ino
        node.names.append((op.new_parent, op.new_name))
        node.touch(modified=False)
        parent.touch()
        return self._looked_up(node)

    # -- file handles -------------------------------------------------------------------

    def _opened(self, node: Node, op: Op) -> int:
        fh = next(self._handles)
        self.files[fh] = (node.ino, op.flags, (op.pid, op.uid))
        node.opens += 1
        return fh

    async def open(self, op: Op) -> pyfuse3.FileInfo:
        node = self._node(op.inode)
        if op.flags & os.O_TRUNC and node.size:  # libfuse asks for atomic O_TRUNC: the open truncates
            self._resize(node, 0)
            node.touch()
        op.fh = self._opened(node, op)
        return self._file_info(op.fh, op.flags)

    async def create(self, op: Op) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        node = self._new(op, stat.S_IFREG | stat.S_IMODE(op.mode))
        op.fh = self._opened(node, op)
        return self._file_info(op.fh, op.flags), self._looked_up(node)

    async def read(self, op: Op) -> bytes:
        node = self._node(self.files[op.fh][0])
        end = min(node.size, op.offset + op.size)
        if end <= op.offset:
            return b""
        if self._keep_data:
            data = bytes(node.data[op.offset : end])
        elif self._read_pattern:
            data = bytes(_PATTERN[index % 256] for index in range(op.offset, end))
        else:
            data = bytes(end - op.offset)
        op.transferred = len(data)
        return data

    async def write(self, op: Op) -> int:
        ino, flags, _ = self.files[op.fh]
        node = self._node(ino)
        offset = node.size if flags & os.O_APPEND else op.offset
        end = offset + len(op.data)
        if end > node.size:
            self._resize(node, end)
        if self._keep_data:
            node.data[offset:end] = op.data
        node.touch()
        op.transferred = len(op.data)
        return op.transferred

    async def flush(self, op: Op) -> None:
        return None

    async def release(self, op: Op) -> None:
        ino, _, _ = self.files.pop(op.fh)
        node = self.nodes.get(ino)
        if node is not None:
            node.opens -= 1
            self._collect(node)

    async def fsync(self, op: Op) -> None:
        return None

    # -- directory handles --------------------------------------------------------------

    async def opendir(self, op: Op) -> int:
        self._directory(op.inode)
        op.fh = next(self._handles)
        self.dirs[op.fh] = (op.inode, [])
        return op.fh

    async def readdir(self, op: Op) -> None:
        """Entries from ``op.offset`` on, from a snapshot taken at offset 0 (as the passthrough does)."""
        ino, listing = self.dirs[op.fh]
        directory, children = self._directory(ino)
        if op.offset == 0:
            listing = [b".", b"..", *children]
            self.dirs[op.fh] = (ino, listing)
        token = op.token
        assert token is not None
        for index in range(op.offset, len(listing)):
            name = listing[index]
            if name in (b".", b".."):
                node = directory if name == b"." or not directory.names else self.nodes[directory.names[0][0]]
                if not pyfuse3.readdir_reply(token, name, self._attributes(node), index + 1):
                    return
                continue
            child = children.get(name)
            if child is None:
                continue
            node = self.nodes[child]
            if not pyfuse3.readdir_reply(token, name, self._attributes(node), index + 1):
                return
            node.lookups += 1

    async def releasedir(self, op: Op) -> None:
        self.dirs.pop(op.fh, None)

    async def fsyncdir(self, op: Op) -> None:
        return None

    # -- file system and extended attributes --------------------------------------------

    async def statfs(self, op: Op) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = _BLOCK
        data.f_blocks = self._capacity // _BLOCK
        data.f_bfree = data.f_bavail = (self._capacity - self.kept_bytes) // _BLOCK
        data.f_files = 1 << 32
        data.f_ffree = data.f_favail = (1 << 32) - len(self.nodes)
        data.f_namemax = 255
        return data

    async def setxattr(self, op: Op) -> None:
        node = self._node(op.inode)
        node.xattrs[op.xattr_name] = bytes(op.data)
        node.touch(modified=False)

    async def getxattr(self, op: Op) -> bytes:
        value = self._node(op.inode).xattrs.get(op.xattr_name)
        if value is None:
            raise _error(errno.ENODATA)
        op.transferred = len(value)
        return value

    async def listxattr(self, op: Op) -> list[bytes]:
        return list(self._node(op.inode).xattrs)

    async def removexattr(self, op: Op) -> None:
        node = self._node(op.inode)
        if node.xattrs.pop(op.xattr_name, None) is None:
            raise _error(errno.ENODATA)
        node.touch(modified=False)
