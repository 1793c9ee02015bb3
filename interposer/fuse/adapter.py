"""The pyfuse3 ``Operations`` adapter: decode each request into an ``Op`` and run the pipeline.

This class is deliberately thin.  What it owns is the contract with pyfuse3:

* only ``FUSEError`` may leave a handler; anything else would end pyfuse3's
  session loop and take the mount down.  ``OSError`` keeps its errno; any other
  exception becomes EIO for that one request, is logged with its traceback and
  counted in ``internal_errors``;
* protocol details that are not the backend's business, such as answering a
  failed lookup with a cacheable negative entry.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pyfuse3

from ..errnos import errno_of
from ..layers.tracing.announcements import TraceContextXattr, is_reserved, visible
from ..names import OpName
from .pipeline import Pipeline
from .request import Op, PathResolver

log = logging.getLogger(__name__)

T = TypeVar("T")


class InterposerFS(pyfuse3.Operations):
    """Every FUSE handler, each one line of decoding around ``_run``."""

    supports_dot_lookup = True

    def __init__(
        self,
        pipeline: Pipeline,
        resolver: PathResolver,
        *,
        negative_timeout: float = 0.0,
        writeback_cache: bool = False,
        trace_context: TraceContextXattr | None = None,
    ) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.resolver = resolver
        self.enable_writeback_cache = writeback_cache
        self.internal_errors = 0
        self._negative_timeout = negative_timeout
        self._trace_context = trace_context

    async def _run(self, op: Op) -> Any:
        try:
            return await self.pipeline.call(op)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            raise pyfuse3.FUSEError(errno_of(exc)) from None
        except Exception:
            self.internal_errors += 1
            log.exception("internal error in %s on %s; answered EIO", op.name, _describe(op))
            raise pyfuse3.FUSEError(errno.EIO) from None

    def _op(self, name: OpName, ctx: pyfuse3.RequestContext | None = None, inode: int = 0) -> Op:
        op = Op(name, self.resolver, ctx)
        if inode:
            op.inode = inode
        return op

    def _handle_op(self, name: OpName, fh: int) -> Op:
        op = Op(name, self.resolver)
        op.fh = fh
        return op

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        op = self._op(OpName.LOOKUP, ctx, parent_inode)
        op.entry_name = name
        try:
            result: pyfuse3.EntryAttributes = await self._run(op)
        except pyfuse3.FUSEError as exc:
            if exc.errno != errno.ENOENT or not self._negative_timeout:
                raise
            # An entry with inode 0 tells the kernel to cache the name's absence.
            result = pyfuse3.EntryAttributes()
            result.st_ino = 0
            result.entry_timeout = self._negative_timeout
        return result

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        op = self._op(OpName.FORGET)
        op.forgets = inode_list
        op.size = len(inode_list)
        with contextlib.suppress(pyfuse3.FUSEError):  # forget has no reply; _run logged the unexpected
            await self._run(op)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        result: pyfuse3.EntryAttributes = await self._run(self._op(OpName.GETATTR, ctx, inode))
        return result

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        op = self._op(OpName.SETATTR, ctx, inode)
        if fh is not None:
            op.fh = fh
        op.attr = attr
        op.fields = fields
        if fields.update_size:
            op.size = attr.st_size
        result: pyfuse3.EntryAttributes = await self._run(op)
        return result

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        result: bytes = await self._run(self._op(OpName.READLINK, ctx, inode))
        return result

    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        op = self._op(OpName.SYMLINK, ctx, parent_inode)
        op.entry_name = name
        op.target = target
        result: pyfuse3.EntryAttributes = await self._run(op)
        return result

    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        op = self._op(OpName.MKNOD, ctx, parent_inode)
        op.entry_name = name
        op.mode = mode
        op.rdev = rdev
        result: pyfuse3.EntryAttributes = await self._run(op)
        return result

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        op = self._op(OpName.MKDIR, ctx, parent_inode)
        op.entry_name = name
        op.mode = mode
        result: pyfuse3.EntryAttributes = await self._run(op)
        return result

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        op = self._op(OpName.UNLINK, ctx, parent_inode)
        op.entry_name = name
        await self._run(op)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        op = self._op(OpName.RMDIR, ctx, parent_inode)
        op.entry_name = name
        await self._run(op)

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        op = self._op(OpName.RENAME, ctx, parent_inode_old)
        op.entry_name = name_old
        op.new_parent = parent_inode_new
        op.new_name = name_new
        op.flags = flags
        await self._run(op)

    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        op = self._op(OpName.LINK, ctx, inode)
        op.new_parent = new_parent_inode
        op.new_name = new_name
        result: pyfuse3.EntryAttributes = await self._run(op)
        return result

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        op = self._op(OpName.OPEN, ctx, inode)
        op.flags = flags
        result: pyfuse3.FileInfo = await self._run(op)
        return result

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        op = self._op(OpName.CREATE, ctx, parent_inode)
        op.entry_name = name
        op.mode = mode
        op.flags = flags
        result: tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes] = await self._run(op)
        return result

    async def read(self, fh: int, off: int, size: int) -> bytes:
        op = Op(OpName.READ, self.resolver)
        op.fh = fh
        op.offset = off
        op.size = size
        result: bytes = await self._run(op)
        return result

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        op = Op(OpName.WRITE, self.resolver)
        op.fh = fh
        op.offset = off
        op.size = len(buf)
        op.data = buf
        result: int = await self._run(op)
        return result

    async def flush(self, fh: int) -> None:
        await self._run(self._handle_op(OpName.FLUSH, fh))

    async def release(self, fh: int) -> None:
        await self._run(self._handle_op(OpName.RELEASE, fh))

    async def fsync(self, fh: int, datasync: bool) -> None:
        op = self._handle_op(OpName.FSYNC, fh)
        op.datasync = datasync
        await self._run(op)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        result: int = await self._run(self._op(OpName.OPENDIR, ctx, inode))
        return result

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        op = self._handle_op(OpName.READDIR, fh)
        op.offset = start_id
        op.token = token
        await self._run(op)

    async def releasedir(self, fh: int) -> None:
        await self._run(self._handle_op(OpName.RELEASEDIR, fh))

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        op = self._handle_op(OpName.FSYNCDIR, fh)
        op.datasync = datasync
        await self._run(op)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        result: pyfuse3.StatvfsData = await self._run(self._op(OpName.STATFS, ctx, pyfuse3.ROOT_INODE))
        return result

    def _reserved_xattr(self, answer: Callable[[TraceContextXattr], T]) -> T:
        """Answer the trace-context protocol's xattr here: it is the mount's, never the backend's."""
        if self._trace_context is None:
            raise pyfuse3.FUSEError(errno.ENOTSUP)
        try:
            return answer(self._trace_context)
        except OSError as exc:
            raise pyfuse3.FUSEError(errno_of(exc)) from None

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        if is_reserved(name):
            return self._reserved_xattr(lambda xattr: xattr.set(inode, name, value, ctx.pid))
        op = self._op(OpName.SETXATTR, ctx, inode)
        op.size = len(value)
        op.xattr_name = name
        op.data = value
        await self._run(op)

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if is_reserved(name):
            return self._reserved_xattr(lambda xattr: xattr.get(inode, name, ctx.pid))
        op = self._op(OpName.GETXATTR, ctx, inode)
        op.xattr_name = name
        result: bytes = await self._run(op)
        return result

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        result: list[bytes] = await self._run(self._op(OpName.LISTXATTR, ctx, inode))
        return visible(result)

    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        if is_reserved(name):
            return self._reserved_xattr(lambda xattr: xattr.remove(inode, name, ctx.pid))
        op = self._op(OpName.REMOVEXATTR, ctx, inode)
        op.xattr_name = name
        await self._run(op)


def _describe(op: Op) -> str:
    try:
        return op.path
    except Exception:  # path resolution must not mask the original error
        return f"inode {op.inode}"
