"""The pyfuse3 ``Operations`` adapter: decode each request into a ``Request``, resolve it, run the pipeline.

This class is deliberately thin.  What it owns is the contract with pyfuse3:

* only ``FUSEError`` may leave a handler; anything else would end pyfuse3's
  session loop and take the mount down.  ``OSError`` keeps its errno; any other
  exception becomes EIO for that one request, is logged with its traceback and
  counted in ``internal_errors``;
* resolving each request once, before any layer runs (``Request.resolve``): an
  unknown handle is answered EBADF there;
* protocol details that are not the backend's business, such as answering a
  failed lookup with a cacheable negative entry.

Every request goes through the pipeline, the mount's reserved extended
attributes included: the tracing layer answers those (``fuse/reserved.py``).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
from collections.abc import Sequence
from typing import Any

import pyfuse3

from ..errnos import errno_of
from ..names import OpName
from .pipeline import Pipeline
from .request import Notes, Request, Resolver

log = logging.getLogger(__name__)


class InterposerFS(pyfuse3.Operations):
    """Every FUSE handler, each one line of decoding around ``_run``."""

    supports_dot_lookup = True

    def __init__(
        self,
        pipeline: Pipeline,
        resolver: Resolver,
        *,
        negative_timeout: float = 0.0,
        writeback_cache: bool = False,
    ) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.resolver = resolver
        self.enable_writeback_cache = writeback_cache
        self.internal_errors = 0
        self._negative_timeout = negative_timeout

    async def _run(self, request: Request) -> Any:
        """Resolve the request, send it through the pipeline, and give pyfuse3 the reply's value."""
        try:
            reply = await self.pipeline.call(request.resolve(self.resolver), Notes())
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            raise pyfuse3.FUSEError(errno_of(exc)) from None
        except Exception:
            self.internal_errors += 1
            log.exception("internal error in %s on %s; answered EIO", request.name, request.path or request)
            raise pyfuse3.FUSEError(errno.EIO) from None
        return reply.value

    @staticmethod
    def _request(name: OpName, ctx: pyfuse3.RequestContext | None = None, inode: int = 0) -> Request:
        request = Request(name)
        request.inode = inode
        if ctx is not None:
            request.pid = ctx.pid
            request.uid = ctx.uid
            request.gid = ctx.gid
        return request

    @staticmethod
    def _handle_request(name: OpName, fh: int) -> Request:
        request = Request(name)
        request.fh = fh
        return request

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        request = self._request(OpName.LOOKUP, ctx, parent_inode)
        request.entry_name = name
        try:
            result: pyfuse3.EntryAttributes = await self._run(request)
        except pyfuse3.FUSEError as exc:
            if exc.errno != errno.ENOENT or not self._negative_timeout:
                raise
            # An entry with inode 0 tells the kernel to cache the name's absence.
            result = pyfuse3.EntryAttributes()
            result.st_ino = 0
            result.entry_timeout = self._negative_timeout
        return result

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        request = self._request(OpName.FORGET)
        request.forgets = inode_list
        request.size = len(inode_list)
        with contextlib.suppress(pyfuse3.FUSEError):  # forget has no reply; _run logged the unexpected
            await self._run(request)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        result: pyfuse3.EntryAttributes = await self._run(self._request(OpName.GETATTR, ctx, inode))
        return result

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        request = self._request(OpName.SETATTR, ctx, inode)
        if fh is not None:
            request.fh = fh
        request.attr = attr
        request.fields = fields
        if fields.update_size:
            request.size = attr.st_size
        result: pyfuse3.EntryAttributes = await self._run(request)
        return result

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        result: bytes = await self._run(self._request(OpName.READLINK, ctx, inode))
        return result

    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        request = self._request(OpName.SYMLINK, ctx, parent_inode)
        request.entry_name = name
        request.target = target
        result: pyfuse3.EntryAttributes = await self._run(request)
        return result

    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        request = self._request(OpName.MKNOD, ctx, parent_inode)
        request.entry_name = name
        request.mode = mode
        request.rdev = rdev
        result: pyfuse3.EntryAttributes = await self._run(request)
        return result

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        request = self._request(OpName.MKDIR, ctx, parent_inode)
        request.entry_name = name
        request.mode = mode
        result: pyfuse3.EntryAttributes = await self._run(request)
        return result

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        request = self._request(OpName.UNLINK, ctx, parent_inode)
        request.entry_name = name
        await self._run(request)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        request = self._request(OpName.RMDIR, ctx, parent_inode)
        request.entry_name = name
        await self._run(request)

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        request = self._request(OpName.RENAME, ctx, parent_inode_old)
        request.entry_name = name_old
        request.new_parent = parent_inode_new
        request.new_name = name_new
        request.flags = flags
        await self._run(request)

    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        request = self._request(OpName.LINK, ctx, inode)
        request.new_parent = new_parent_inode
        request.new_name = new_name
        result: pyfuse3.EntryAttributes = await self._run(request)
        return result

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        request = self._request(OpName.OPEN, ctx, inode)
        request.flags = flags
        result: pyfuse3.FileInfo = await self._run(request)
        return result

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        request = self._request(OpName.CREATE, ctx, parent_inode)
        request.entry_name = name
        request.mode = mode
        request.flags = flags
        result: tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes] = await self._run(request)
        return result

    async def read(self, fh: int, off: int, size: int) -> bytes:
        request = self._handle_request(OpName.READ, fh)
        request.offset = off
        request.size = size
        result: bytes = await self._run(request)
        return result

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        request = self._handle_request(OpName.WRITE, fh)
        request.offset = off
        request.size = len(buf)
        request.data = buf
        result: int = await self._run(request)
        return result

    async def flush(self, fh: int) -> None:
        await self._run(self._handle_request(OpName.FLUSH, fh))

    async def release(self, fh: int) -> None:
        await self._run(self._handle_request(OpName.RELEASE, fh))

    async def fsync(self, fh: int, datasync: bool) -> None:
        request = self._handle_request(OpName.FSYNC, fh)
        request.datasync = datasync
        await self._run(request)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        result: int = await self._run(self._request(OpName.OPENDIR, ctx, inode))
        return result

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        request = self._handle_request(OpName.READDIR, fh)
        request.offset = start_id
        request.reply_entry = functools.partial(pyfuse3.readdir_reply, token)
        await self._run(request)

    async def releasedir(self, fh: int) -> None:
        await self._run(self._handle_request(OpName.RELEASEDIR, fh))

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        request = self._handle_request(OpName.FSYNCDIR, fh)
        request.datasync = datasync
        await self._run(request)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        result: pyfuse3.StatvfsData = await self._run(self._request(OpName.STATFS, ctx, pyfuse3.ROOT_INODE))
        return result

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        request = self._request(OpName.SETXATTR, ctx, inode)
        request.size = len(value)
        request.xattr_name = name
        request.data = value
        await self._run(request)

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        request = self._request(OpName.GETXATTR, ctx, inode)
        request.xattr_name = name
        result: bytes = await self._run(request)
        return result

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        result: list[bytes] = await self._run(self._request(OpName.LISTXATTR, ctx, inode))
        return result

    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        request = self._request(OpName.REMOVEXATTR, ctx, inode)
        request.xattr_name = name
        await self._run(request)
