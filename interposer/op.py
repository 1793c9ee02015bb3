"""The record of one FUSE request as it travels through the layer pipeline.

One flat, slotted record for every operation keeps the hot path cheap (no
per-operation classes, no dicts) and lets a layer written once (tracing,
metrics, faults, throttling) treat every request alike.  Fields that an
operation does not use keep their defaults.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .names import DIR_HANDLE_OPS, ENTRY_OPS, HANDLE_OPS, OpName

if TYPE_CHECKING:
    import pyfuse3


class PathResolver(Protocol):
    """What an Op needs to turn its inode or handle into a path, on demand."""

    def path_of_inode(self, inode: int) -> str: ...

    def inode_of_handle(self, fh: int) -> int: ...

    def inode_of_dir_handle(self, fh: int) -> int: ...


class Op:
    """One request: what was asked, by whom, and how it ended.

    ``path`` is resolved lazily because only some layers need it and resolution
    walks the inode table.  ``transferred`` counts the bytes actually moved,
    which can differ from the requested ``size`` (short reads, EOF).
    """

    __slots__ = (
        "name",
        "inode",
        "fh",
        "offset",
        "size",
        "pid",
        "uid",
        "gid",
        "umask",
        "entry_name",
        "new_parent",
        "new_name",
        "mode",
        "flags",
        "rdev",
        "data",
        "target",
        "attr",
        "fields",
        "xattr_name",
        "token",
        "datasync",
        "forgets",
        "transferred",
        "result",
        "error",
        "resolver",
        "_path",
    )

    def __init__(
        self,
        name: OpName,
        resolver: PathResolver,
        *,
        inode: int = 0,
        fh: int = -1,
        offset: int = 0,
        size: int = 0,
        ctx: pyfuse3.RequestContext | None = None,
    ) -> None:
        self.name = name
        self.resolver = resolver
        self.inode = inode
        self.fh = fh
        self.offset = offset
        self.size = size
        if ctx is None:
            self.pid = self.uid = self.gid = self.umask = 0
        else:
            self.pid, self.uid, self.gid, self.umask = ctx.pid, ctx.uid, ctx.gid, ctx.umask
        self.entry_name = b""
        self.new_parent = 0
        self.new_name = b""
        self.mode = 0
        self.flags = 0
        self.rdev = 0
        self.data = b""
        self.target = b""
        self.attr: pyfuse3.EntryAttributes | None = None
        self.fields: pyfuse3.SetattrFields | None = None
        self.xattr_name = b""
        self.token: pyfuse3.ReaddirToken | None = None
        self.datasync = False
        self.forgets: Sequence[tuple[int, int]] = ()
        self.transferred = 0
        self.result: Any = None
        self.error: BaseException | None = None
        self._path: str | None = None

    @property
    def path(self) -> str:
        """The path of the object this request acts on, relative to the mount root."""
        if self._path is None:
            self._path = self._resolve_path()
        return self._path

    @property
    def new_path(self) -> str:
        """For rename and link: the path the entry gets."""
        return _join(self.resolver.path_of_inode(self.new_parent), self.new_name)

    def _resolve_path(self) -> str:
        resolver = self.resolver
        if self.name in ENTRY_OPS and self.name is not OpName.LINK:
            return _join(resolver.path_of_inode(self.inode), self.entry_name)
        if self.name in HANDLE_OPS:
            return resolver.path_of_inode(resolver.inode_of_handle(self.fh))
        if self.name in DIR_HANDLE_OPS:
            return resolver.path_of_inode(resolver.inode_of_dir_handle(self.fh))
        return resolver.path_of_inode(self.inode)

    def __repr__(self) -> str:
        return f"Op({self.name}, inode={self.inode}, fh={self.fh}, pid={self.pid})"


def _join(parent: str, name: bytes) -> str:
    text = name.decode("utf-8", "surrogateescape")
    if text == ".":
        return parent
    if text == "..":
        return posixpath.dirname(parent)
    if parent == "/":
        return "/" + text
    return parent + "/" + text
