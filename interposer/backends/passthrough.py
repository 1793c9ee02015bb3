"""The passthrough backend: every operation is carried out on the backing directory.

Each known inode holds an ``O_PATH`` descriptor (see ``inodes``), so every call
is an ``*at`` syscall relative to a descriptor, never a path walk: external
renames cannot redirect it and a name from the kernel (a single component,
never followed if it is a symlink) cannot escape the backing root.

pyfuse3 runs every request on one trio thread, so a blocking call stalls the
whole mount.  Calls that finish in microseconds on a local backing directory
(stat, open, pread from the page cache) run directly: measured, a thread hop
costs more than they do.  Calls whose latency is unbounded by design (fsync,
fsyncdir) go through ``trio.to_thread``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Awaitable, Callable

import pyfuse3
import trio

from ..config import CacheConfig
from ..fuse.request import NONE, Reply, Request
from ..names import HANDLE_DIRECTORY, HANDLE_FILE, OpName
from . import syscalls
from .handles import Handle, HandleTable
from .inode_table import ROOT_INODE, Inode, InodeTable
from .protocol import without_xattrs

_OPEN_DROPPED = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_DIRECT | os.O_NOFOLLOW
"""Flags the kernel has already honoured, or that reopening through /proc/self/fd must not see:
O_NOFOLLOW would refuse the /proc magic link itself (ELOOP); O_DIRECT becomes direct_io."""
_DOT_NAMES = (b".", b"..")


def _proc_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _changes_anything(fields: pyfuse3.SetattrFields) -> bool:
    return bool(
        fields.update_mode
        or fields.update_uid
        or fields.update_gid
        or fields.update_size
        or fields.update_atime
        or fields.update_mtime
    )


class PassthroughBackend:
    """Serves FUSE requests from a backing directory; owns the inode and handle tables."""

    def __init__(self, root: str, cache: CacheConfig, max_inode_fds: int, *, xattrs: bool = True) -> None:
        self.root = os.path.realpath(root)
        self.inodes = InodeTable(self.root, max_inode_fds)
        self.handles = HandleTable()
        self._entry_timeout = cache.entry_timeout
        self._attr_timeout = cache.attr_timeout
        self._keep_cache = cache.keep_cache
        self._direct_io = cache.direct_io
        self._writeback = cache.writeback_cache
        self._is_root = os.geteuid() == 0
        self.handlers: dict[OpName, Callable[[Request], Awaitable[Reply]]] = {
            OpName.LOOKUP: self.lookup,
            OpName.FORGET: self.forget,
            OpName.GETATTR: self.getattr,
            OpName.SETATTR: self.setattr,
            OpName.READLINK: self.readlink,
            OpName.SYMLINK: self.symlink,
            OpName.MKNOD: self.mknod,
            OpName.MKDIR: self.mkdir,
            OpName.UNLINK: self.unlink,
            OpName.RMDIR: self.rmdir,
            OpName.RENAME: self.rename,
            OpName.LINK: self.link,
            OpName.OPEN: self.open,
            OpName.CREATE: self.create,
            OpName.READ: self.read,
            OpName.WRITE: self.write,
            OpName.FLUSH: self.flush,
            OpName.RELEASE: self.release,
            OpName.FSYNC: self.fsync,
            OpName.OPENDIR: self.opendir,
            OpName.READDIR: self.readdir,
            OpName.RELEASEDIR: self.releasedir,
            OpName.FSYNCDIR: self.fsyncdir,
            OpName.STATFS: self.statfs,
            OpName.SETXATTR: self.setxattr,
            OpName.GETXATTR: self.getxattr,
            OpName.LISTXATTR: self.listxattr,
            OpName.REMOVEXATTR: self.removexattr,
        }
        if not xattrs:
            self.handlers = without_xattrs(self.handlers)

    async def __call__(self, request: Request) -> Reply:
        """The end of the pipeline: carry out the operation."""
        return await self.handlers[request.name](request)

    # -- what the adapter resolves a request with, and what status shows ----------------

    def path_of_inode(self, inode: int) -> str:
        return self.inodes.path_of_inode(inode)

    def paths_of_inode(self, inode: int) -> list[str]:
        return self.inodes.paths_of_inode(inode)

    def handle(self, fh: int) -> Handle:
        return self.handles.get(fh)

    def stats(self) -> dict[str, int]:
        """Table sizes for the mount's status."""
        return {"inodes": len(self.inodes), "inode_fds": self.inodes.open_descriptors, **self.handles.stats()}

    def open_inode(self, inode: int, flags: int) -> int:
        """A new descriptor for a known inode (the caller closes it); for repairs outside any request."""
        return os.open(_proc_path(self.inodes.fd(self.inodes.get(inode))), flags | os.O_CLOEXEC)

    # -- helpers -----------------------------------------------------------------------

    def _attributes(self, ino: int, st: os.stat_result) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = ino
        attrs.st_mode = st.st_mode
        attrs.st_nlink = st.st_nlink
        attrs.st_uid = st.st_uid
        attrs.st_gid = st.st_gid
        attrs.st_rdev = st.st_rdev
        attrs.st_size = st.st_size
        attrs.st_blksize = st.st_blksize
        attrs.st_blocks = st.st_blocks
        attrs.st_atime_ns = st.st_atime_ns
        attrs.st_mtime_ns = st.st_mtime_ns
        attrs.st_ctime_ns = st.st_ctime_ns
        attrs.entry_timeout = self._entry_timeout
        attrs.attr_timeout = self._attr_timeout
        return attrs

    def _acquire(self, parent: Inode, name: bytes) -> tuple[Inode, os.stat_result]:
        """Find the named child of ``parent`` with one fstatat and count a kernel reference to it."""
        parent_fd = self.inodes.fd(parent)
        if name == b"." or (name == b".." and parent.ino == ROOT_INODE):
            st = os.fstat(parent_fd)
        else:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        return self.inodes.acquire(parent.ino, name, st), st

    def _created(self, parent: Inode, name: bytes, op: Request) -> Reply:
        """Give a new object to its caller, as the kernel would have, and count the reference."""
        uid, gid = self._owner_for(parent, op)
        if uid != -1 or gid != -1:
            os.chown(name, uid, gid, dir_fd=self.inodes.fd(parent), follow_symlinks=False)
        entry, st = self._acquire(parent, name)
        return Reply(self._attributes(entry.ino, st))

    def _owner_for(self, parent: Inode, op: Request) -> tuple[int, int]:
        """The uid/gid to give a new object: the caller's, except a setgid parent keeps its group."""
        if not self._is_root:
            return -1, -1
        uid = op.uid if op.uid != 0 else -1
        gid = op.gid if op.gid != 0 else -1
        if gid != -1 and os.fstat(self.inodes.fd(parent)).st_mode & stat.S_ISGID:
            gid = -1
        return uid, gid

    def _fd(self, ino: int) -> int:
        """The O_PATH descriptor of a kernel-named inode."""
        return self.inodes.fd(self.inodes.get(ino))

    def _open_flags(self, flags: int) -> int:
        flags &= ~_OPEN_DROPPED
        if self._writeback:
            # The kernel reads partial pages for the writeback cache and does appends itself.
            if flags & os.O_ACCMODE == os.O_WRONLY:
                flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
            flags &= ~os.O_APPEND
        return flags | os.O_CLOEXEC

    def _file_info(self, fd: int, flags: int) -> pyfuse3.FileInfo:
        direct = self._direct_io or bool(flags & os.O_DIRECT)
        return pyfuse3.FileInfo(fh=fd, direct_io=direct, keep_cache=self._keep_cache)

    # -- inode operations --------------------------------------------------------------

    async def lookup(self, op: Request) -> Reply:
        entry, st = self._acquire(self.inodes.get(op.inode), op.entry_name)
        return Reply(self._attributes(entry.ino, st))

    async def forget(self, op: Request) -> Reply:
        for ino, count in op.forgets:
            self.inodes.forget(ino, count)
        return NONE

    async def getattr(self, op: Request) -> Reply:
        entry = self.inodes.get(op.inode)
        return Reply(self._attributes(entry.ino, os.fstat(self.inodes.fd(entry))))

    async def setattr(self, op: Request) -> Reply:
        entry = self.inodes.get(op.inode)
        fd = self.inodes.fd(entry)
        attr, fields = op.attr, op.fields
        assert attr is not None
        assert fields is not None
        if fields.update_mode:
            os.chmod(_proc_path(fd), stat.S_IMODE(attr.st_mode))
        if fields.update_uid or fields.update_gid:
            syscalls.set_owner(
                fd,
                attr.st_uid if fields.update_uid else -1,
                attr.st_gid if fields.update_gid else -1,
            )
        if fields.update_size:
            if op.fh >= 0:
                os.ftruncate(op.fh, attr.st_size)
            else:
                os.truncate(_proc_path(fd), attr.st_size)
        if fields.update_atime or fields.update_mtime:
            syscalls.set_times(
                fd,
                attr.st_atime_ns if fields.update_atime else None,
                attr.st_mtime_ns if fields.update_mtime else None,
            )
        if not _changes_anything(fields):
            # chown(path, -1, -1) and the like change nothing but ctime, and on Linux they do change it.  Setting
            # mtime to what it is changes ctime alone; a chown here would also clear setuid bits (the kernel has
            # already sent that as a mode change where it applies).
            syscalls.set_times(fd, None, os.fstat(fd).st_mtime_ns)
        return Reply(self._attributes(entry.ino, os.fstat(fd)))

    async def readlink(self, op: Request) -> Reply:
        return Reply(os.readlink(b"", dir_fd=self._fd(op.inode)))

    async def symlink(self, op: Request) -> Reply:
        parent = self.inodes.get(op.inode)
        os.symlink(op.target, op.entry_name, dir_fd=self.inodes.fd(parent))
        return self._created(parent, op.entry_name, op)

    async def mknod(self, op: Request) -> Reply:
        parent = self.inodes.get(op.inode)
        os.mknod(op.entry_name, op.mode, op.rdev, dir_fd=self.inodes.fd(parent))
        return self._created(parent, op.entry_name, op)

    async def mkdir(self, op: Request) -> Reply:
        parent = self.inodes.get(op.inode)
        os.mkdir(op.entry_name, op.mode, dir_fd=self.inodes.fd(parent))
        return self._created(parent, op.entry_name, op)

    async def unlink(self, op: Request) -> Reply:
        parent = self.inodes.get(op.inode)
        self.inodes.pin(parent.ino, op.entry_name)
        os.unlink(op.entry_name, dir_fd=self.inodes.fd(parent))
        self.inodes.removed(parent.ino, op.entry_name)
        return NONE

    async def rmdir(self, op: Request) -> Reply:
        parent = self.inodes.get(op.inode)
        self.inodes.pin(parent.ino, op.entry_name)
        os.rmdir(op.entry_name, dir_fd=self.inodes.fd(parent))
        self.inodes.removed(parent.ino, op.entry_name)
        return NONE

    async def rename(self, op: Request) -> Reply:
        old_parent = self.inodes.get(op.inode)
        new_parent = self.inodes.get(op.new_parent)
        old_fd, new_fd = self.inodes.fd(old_parent), self.inodes.fd(new_parent)
        exchange = bool(op.flags & syscalls.RENAME_EXCHANGE)
        if not exchange:
            self.inodes.pin(new_parent.ino, op.new_name)
        if op.flags:
            syscalls.renameat2(old_fd, op.entry_name, new_fd, op.new_name, op.flags)
        else:
            os.rename(op.entry_name, op.new_name, src_dir_fd=old_fd, dst_dir_fd=new_fd)
        self.inodes.renamed(
            (old_parent.ino, op.entry_name),
            (new_parent.ino, op.new_name),
            exchange=exchange,
        )
        return NONE

    async def link(self, op: Request) -> Reply:
        entry = self.inodes.get(op.inode)
        new_parent = self.inodes.get(op.new_parent)
        fd = self.inodes.fd(entry)
        syscalls.link_to(fd, self.inodes.fd(new_parent), op.new_name)
        self.inodes.add_reference(entry, new_parent.ino, op.new_name)
        return Reply(self._attributes(entry.ino, os.fstat(fd)))

    # -- file handles ------------------------------------------------------------------

    async def open(self, op: Request) -> Reply:
        entry = self.inodes.get(op.inode)
        fd = os.open(_proc_path(self.inodes.fd(entry)), self._open_flags(op.flags))
        self.handles.add(fd, Handle(HANDLE_FILE, entry.ino, (op.pid, op.uid, op.gid), op.flags))
        return Reply(self._file_info(fd, op.flags), handle=fd)

    async def create(self, op: Request) -> Reply:
        parent = self.inodes.get(op.inode)
        flags = self._open_flags(op.flags) | os.O_CREAT | os.O_NOFOLLOW | (op.flags & os.O_EXCL)
        fd = os.open(op.entry_name, flags, op.mode & 0o7777, dir_fd=self.inodes.fd(parent))
        try:
            uid, gid = self._owner_for(parent, op)
            if uid != -1 or gid != -1:
                os.fchown(fd, uid, gid)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        entry = self.inodes.acquire(parent.ino, op.entry_name, st)
        attrs = self._attributes(entry.ino, st)
        self.handles.add(fd, Handle(HANDLE_FILE, entry.ino, (op.pid, op.uid, op.gid), op.flags))
        return Reply((self._file_info(fd, op.flags), attrs), handle=fd)

    async def read(self, op: Request) -> Reply:
        data = os.pread(op.fh, op.size, op.offset)
        return Reply(data, transferred=len(data))

    async def write(self, op: Request) -> Reply:
        written = os.pwrite(op.fh, op.data, op.offset)
        return Reply(written, transferred=written)

    async def flush(self, op: Request) -> Reply:
        # Closing a duplicate reports deferred write errors (NFS, quotas) at close(2), as native does.
        os.close(os.dup(op.fh))
        return NONE

    async def release(self, op: Request) -> Reply:
        self.handles.pop(op.fh)
        os.close(op.fh)
        return NONE

    async def fsync(self, op: Request) -> Reply:
        await trio.to_thread.run_sync(os.fdatasync if op.datasync else os.fsync, op.fh)
        return NONE

    # -- directory handles -------------------------------------------------------------

    async def opendir(self, op: Request) -> Reply:
        entry = self.inodes.get(op.inode)
        fd = os.open(_proc_path(self.inodes.fd(entry)), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.handles.add(fd, Handle(HANDLE_DIRECTORY, entry.ino, (op.pid, op.uid, op.gid)))
        return Reply(fd, handle=fd)

    async def readdir(self, op: Request) -> Reply:
        """Reply with entries from ``op.offset`` on; offsets index a snapshot taken at offset 0.

        The snapshot makes resume offsets exact under concurrent change and a
        whole listing O(N); rewinddir (offset 0) takes a fresh one.  Every entry
        but ``.`` and ``..`` counts a lookup, because pyfuse3 always answers
        with readdirplus and the kernel will forget each one.
        """
        handle = self.handles.get(op.fh)
        if op.offset == 0 or handle.listing is None:
            handle.listing = [*_DOT_NAMES, *os.listdir(os.fsencode(_proc_path(op.fh)))]
        directory = self.inodes.get(handle.inode)
        listing = handle.listing
        reply_entry = op.reply_entry
        assert reply_entry is not None
        for index in range(op.offset, len(listing)):
            name = listing[index]
            if name in _DOT_NAMES:
                if not reply_entry(name, self._dot_attributes(directory, name), index + 1):
                    break
                continue
            try:
                entry, st = self._acquire(directory, name)
            except FileNotFoundError:
                continue
            if not reply_entry(name, self._attributes(entry.ino, st), index + 1):
                self.inodes.forget(entry.ino, 1)
                break
        return NONE

    def _dot_attributes(self, directory: Inode, name: bytes) -> pyfuse3.EntryAttributes:
        fd = self.inodes.fd(directory)
        if name == b"." or directory.ino == ROOT_INODE:
            return self._attributes(directory.ino, os.fstat(fd))
        st = os.stat(b"..", dir_fd=fd, follow_symlinks=False)
        return self._attributes(self.inodes.number_for(st), st)

    async def releasedir(self, op: Request) -> Reply:
        return await self.release(op)  # a directory handle is a descriptor in the same table

    async def fsyncdir(self, op: Request) -> Reply:
        return await self.fsync(op)

    # -- file system and extended attributes -------------------------------------------

    async def statfs(self, op: Request) -> Reply:
        st = os.statvfs(self.inodes.root.fd)
        data = pyfuse3.StatvfsData()
        data.f_bsize = st.f_bsize
        data.f_frsize = st.f_frsize
        data.f_blocks = st.f_blocks
        data.f_bfree = st.f_bfree
        data.f_bavail = st.f_bavail
        data.f_files = st.f_files
        data.f_ffree = st.f_ffree
        data.f_favail = st.f_favail
        data.f_namemax = st.f_namemax
        return Reply(data)

    async def setxattr(self, op: Request) -> Reply:
        os.setxattr(_proc_path(self._fd(op.inode)), op.xattr_name, op.data)
        return NONE

    async def getxattr(self, op: Request) -> Reply:
        value = os.getxattr(_proc_path(self._fd(op.inode)), op.xattr_name)
        return Reply(value, transferred=len(value))

    async def listxattr(self, op: Request) -> Reply:
        names = os.listxattr(_proc_path(self._fd(op.inode)))
        return Reply([os.fsencode(name) for name in names])

    async def removexattr(self, op: Request) -> Reply:
        os.removexattr(_proc_path(self._fd(op.inode)), op.xattr_name)
        return NONE

    def close(self) -> None:
        """Close every descriptor; called once the session has ended."""
        for fd in self.handles.numbers():
            try:
                os.close(fd)
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    raise
        self.handles.clear()
        self.inodes.close()
