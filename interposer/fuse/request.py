"""The request contract: what a request asks, what the backend replies, and what layers add on the way.

Three objects, each with one writer:

* ``Request``: written by the adapter only, and resolved completely at entry
  (paths, caller, the handle's inode) before any layer or backend runs, so no
  layer resolves anything after the backend has changed its tables.  A layer
  that must change what goes inward (a short write, corrupted data) passes a
  copy made with ``with_changes``; the request it received stays as it was.
* ``Reply``: written by the backend only: the value for pyfuse3, the new
  handle, the bytes moved.  A layer that changes the value (a corrupted read)
  returns a new reply.
* ``Notes``: what inner layers report to outer ones (the fault injected, a
  throttle wait, the span's ids).  It is passed alongside the request rather
  than carried by the reply because it must survive a failure: an injected
  errno raises, and no reply exists then, yet the tracing and metrics layers
  must still see the fault.

One of each is made per FUSE request, so each is flat and cheap to build.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..names import TRAITS, Addressing, OpName, OpTraits
from ..pathnames import child_path

if TYPE_CHECKING:
    import pyfuse3

    from ..backends.handles import Handle

ReaddirReply = Callable[[bytes, "pyfuse3.EntryAttributes", int], bool]
"""Adds one entry to a readdir reply (``pyfuse3.readdir_reply`` bound to the request's token); False: full."""


class Resolver(Protocol):
    """What the adapter needs from the backend to resolve a request at entry."""

    def path_of_inode(self, inode: int) -> str: ...

    def paths_of_inode(self, inode: int) -> list[str]: ...

    def handle(self, fh: int) -> Handle:
        """The open handle ``fh``; raises OSError(EBADF) for an unknown one."""
        ...


class Request:
    """One request: what was asked, by whom, on what; resolved at entry and never changed after.

    Fields an operation does not use keep their class-level defaults, so
    building a request costs only the assignments it needs: this runs once per
    FUSE request.  ``inode`` is the object acted on: for handle requests the
    handle's inode, for entry requests the parent directory.
    """

    inode = 0
    fh = -1
    offset = 0
    size = 0
    pid = 0
    uid = 0
    gid = 0
    path = ""
    new_path: str | None = None
    """Rename and link: the path the entry gets."""
    other_paths: list[str] | None = None
    """Link: every path the inode will have, the new one last."""
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
    reply_entry: ReaddirReply | None = None
    datasync = False
    forgets: Sequence[tuple[int, int]] = ()

    def __init__(self, name: OpName) -> None:
        self.name = name
        self.traits: OpTraits = TRAITS[name]

    def resolve(self, resolver: Resolver) -> Request:
        """Fill in the path(s), and for handle requests the handle's inode and opener; returns self.

        Called once by the adapter before the pipeline runs.  A handle that
        does not exist raises EBADF here, before any layer sees the request.
        """
        addressing = self.traits.addressing
        if addressing is Addressing.HANDLE or addressing is Addressing.DIR_HANDLE:
            handle = resolver.handle(self.fh)
            self.inode = handle.inode
            if not self.pid:
                self.pid, self.uid, self.gid = handle.opener
            self.path = resolver.path_of_inode(handle.inode)
        elif addressing is Addressing.ENTRY:
            self.path = child_path(resolver.path_of_inode(self.inode), self.entry_name)
        elif self.inode:
            self.path = resolver.path_of_inode(self.inode)
        if self.new_parent:
            self.new_path = child_path(resolver.path_of_inode(self.new_parent), self.new_name)
            if addressing is Addressing.INODE:
                self.other_paths = [*resolver.paths_of_inode(self.inode), self.new_path]
        return self

    def with_changes(self, **changes: Any) -> Request:
        """A copy with some fields changed: how a layer sends something else inward without writing here."""
        changed = copy.copy(self)
        for field, value in changes.items():
            setattr(changed, field, value)
        return changed

    def __repr__(self) -> str:
        return f"Request({self.name}, {self.path!r}, inode={self.inode}, fh={self.fh}, pid={self.pid})"


class Reply:
    """What the backend answers: the value pyfuse3 returns, the handle it opened, the bytes it moved."""

    __slots__ = ("handle", "transferred", "value")

    def __init__(self, value: Any = None, *, handle: int = -1, transferred: int = 0) -> None:
        self.value = value
        self.handle = handle
        self.transferred = transferred

    def with_value(self, value: Any) -> Reply:
        """The same reply with another value (a layer's corrupted read, overridden attributes)."""
        return Reply(value, handle=self.handle, transferred=self.transferred)


NONE = Reply()
"""The reply of every request that answers nothing; replies are never written, so one serves all."""


class Notes:
    """What inner layers tell outer ones about one request, kept even when the request fails.

    ``fault`` and ``events`` are written by the fault and throttle layers and
    read by tracing and metrics; ``span_ids`` is written by the tracing layer
    before the request runs and read by metrics for exemplars.  Class-level
    defaults, so making one per request costs no assignment.
    """

    fault: str | None = None
    """The most consequential kind of fault injected into this request."""
    events: list[tuple[str, dict[str, Any]]] | None = None
    """(name, attributes) of what happened to the request, for its span."""
    span_ids: tuple[int, int] | None = None
    """The (trace, span) ids of the request's span, when it will be kept."""

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        """Report something that happened to the request."""
        if self.events is None:
            self.events = []
        self.events.append((name, attributes))
