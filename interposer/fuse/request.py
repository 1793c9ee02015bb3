"""The record of one FUSE request as it travels through the layer pipeline.

One flat, slotted record for every operation keeps the hot path cheap (no
per-operation classes, no dicts) and lets a layer written once (tracing,
metrics, faults, throttling) treat every request alike.  Fields that an
operation does not use keep their defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..names import DIR_HANDLE_OPS, ENTRY_OPS, HANDLE_OPS, OpName
from ..pathnames import child_path

if TYPE_CHECKING:
    import pyfuse3


class PathResolver(Protocol):
    """What an Op needs to turn its inode or handle into a path, on demand."""

    def path_of_inode(self, inode: int) -> str: ...

    def paths_of_inode(self, inode: int) -> list[str]: ...

    def inode_of_handle(self, fh: int) -> int: ...

    def inode_of_dir_handle(self, fh: int) -> int: ...

    def opener_of_handle(self, fh: int) -> tuple[int, int]: ...


class Op:
    """One request: what was asked, by whom, and what it moved.

    Fields an operation does not use keep their class-level defaults, so
    building an Op costs only the assignments the request needs: this runs once
    per FUSE request.  ``path`` is resolved lazily because only some layers need
    it and resolution walks the inode table.  ``transferred`` counts the bytes
    actually moved, which can differ from the requested ``size``.
    """

    inode = 0
    fh = -1
    offset = 0
    size = 0
    pid = 0
    uid = 0
    gid = 0
    entry_name = b""
    new_parent = 0
    new_name = b""
    mode = 0
    flags = 0
    rdev = 0
    data = b""
    target = b""
    attr: pyfuse3.EntryAttributes | None = None
    fields: pyfuse3.SetattrFields | None = None
    xattr_name = b""
    token: pyfuse3.ReaddirToken | None = None
    datasync = False
    forgets: Sequence[tuple[int, int]] = ()
    transferred = 0
    fault: str | None = None
    """Set by the fault layer: the kind of fault injected into this request."""
    events: list[tuple[str, dict[str, Any]]] | None = None
    """Set by inner layers: (name, attributes) of things that happened to this request, for its span."""
    span_ids: tuple[int, int] | None = None
    """Set by the tracing layer before the request runs when its span will be kept: its (trace, span) ids."""
    _path: str | None = None

    def __init__(self, name: OpName, resolver: PathResolver, ctx: pyfuse3.RequestContext | None = None) -> None:
        self.name = name
        self.resolver = resolver
        if ctx is not None:
            self.pid = ctx.pid
            self.uid = ctx.uid
            self.gid = ctx.gid

    @property
    def path(self) -> str:
        """The path of the object this request acts on, relative to the mount root."""
        if self._path is None:
            self._path = self._resolve_path()
        return self._path

    def caller(self) -> tuple[int, int]:
        """The caller's pid and uid; pyfuse3 gives file-handle requests none, so theirs is the opener's."""
        if self.name in HANDLE_OPS:
            return self.resolver.opener_of_handle(self.fh)
        return self.pid, self.uid

    @property
    def new_path(self) -> str:
        """For rename and link: the path the entry gets."""
        return child_path(self.resolver.path_of_inode(self.new_parent), self.new_name)

    def _resolve_path(self) -> str:
        resolver = self.resolver
        if self.name in ENTRY_OPS:
            return child_path(resolver.path_of_inode(self.inode), self.entry_name)
        if self.name in HANDLE_OPS:
            return resolver.path_of_inode(resolver.inode_of_handle(self.fh))
        if self.name in DIR_HANDLE_OPS:
            return resolver.path_of_inode(resolver.inode_of_dir_handle(self.fh))
        return resolver.path_of_inode(self.inode)

    def __repr__(self) -> str:
        return f"Op({self.name}, inode={self.inode}, fh={self.fh}, pid={self.pid})"
