"""The one place where names shared by code, dashboards, alerts and docs are defined.

Operation names are the FUSE request names that pyfuse3 exposes; they become
span names (``fuse.<name>``) and the ``fuse.operation.name`` attribute, so they
must never be spelled anywhere else.
"""

from __future__ import annotations

from enum import StrEnum


class OpName(StrEnum):
    """Every FUSE operation that the interposer handles."""

    LOOKUP = "lookup"
    FORGET = "forget"
    GETATTR = "getattr"
    SETATTR = "setattr"
    READLINK = "readlink"
    SYMLINK = "symlink"
    MKNOD = "mknod"
    MKDIR = "mkdir"
    UNLINK = "unlink"
    RMDIR = "rmdir"
    RENAME = "rename"
    LINK = "link"
    OPEN = "open"
    CREATE = "create"
    READ = "read"
    WRITE = "write"
    FLUSH = "flush"
    RELEASE = "release"
    FSYNC = "fsync"
    OPENDIR = "opendir"
    READDIR = "readdir"
    RELEASEDIR = "releasedir"
    FSYNCDIR = "fsyncdir"
    STATFS = "statfs"
    SETXATTR = "setxattr"
    GETXATTR = "getxattr"
    LISTXATTR = "listxattr"
    REMOVEXATTR = "removexattr"


HANDLE_OPS = frozenset({OpName.READ, OpName.WRITE, OpName.FLUSH, OpName.RELEASE, OpName.FSYNC})
"""Operations addressed by a file handle rather than an inode."""

DIR_HANDLE_OPS = frozenset({OpName.READDIR, OpName.RELEASEDIR, OpName.FSYNCDIR})
"""Operations addressed by a directory handle."""

ENTRY_OPS = frozenset(
    {
        OpName.LOOKUP,
        OpName.SYMLINK,
        OpName.MKNOD,
        OpName.MKDIR,
        OpName.UNLINK,
        OpName.RMDIR,
        OpName.RENAME,
        OpName.CREATE,
        OpName.LINK,
    }
)
"""Operations that name an entry in a parent directory; their path is parent path + name."""
