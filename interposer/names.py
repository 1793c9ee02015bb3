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
    }
)
"""Operations addressed by (parent inode, name); their path is the parent's path + name.
(LINK names its new entry in ``new_parent``/``new_name``; its path is the linked inode's.)"""


# -- tracing: span names and attribute keys -------------------------------------------------
# OpenTelemetry semantic conventions where they exist (file.*, process.*, error.type), and a
# fuse.* namespace otherwise, after the NFS precedent nfs.operation.name.

SPAN_NAMES = {op: f"fuse.{op.value}" for op in OpName}
"""Low-cardinality span name per operation."""

SPAN_FILE_SESSION = "fuse.file"
SPAN_DIRECTORY_SESSION = "fuse.directory"
SPAN_ACTIVITY = "fuse.activity"
"""Parent spans: a file handle's life, a directory handle's life, a process's handle-less operations."""

ATTR_OPERATION = "fuse.operation.name"
ATTR_FILE_PATH = "file.path"
ATTR_FILE_INODE = "file.inode"
ATTR_NEW_PATH = "fuse.new_path"
ATTR_OTHER_PATHS = "fuse.other_paths"
ATTR_DELETED = "fuse.deleted"
ATTR_HANDLE = "fuse.handle"
ATTR_OFFSET = "fuse.offset"
ATTR_SIZE = "fuse.size"
ATTR_TRANSFERRED = "fuse.transferred"
ATTR_FLAGS = "fuse.flags"
ATTR_PID = "process.pid"
ATTR_UID = "process.user.id"
ATTR_GID = "fuse.caller.gid"
ATTR_COMMAND = "process.command"
ATTR_ERROR_TYPE = "error.type"
ATTR_ERRNO = "fuse.errno"
ATTR_FAULT = "fuse.fault.type"
ATTR_SEGMENT = "fuse.segment"
ATTR_SESSION_OPERATIONS = "fuse.session.operations"
ATTR_SESSION_ERRORS = "fuse.session.errors"
ATTR_SESSION_BYTES_READ = "fuse.session.bytes_read"
ATTR_SESSION_BYTES_WRITTEN = "fuse.session.bytes_written"
ATTR_SESSION_OPS_PREFIX = "fuse.session.ops."
"""Followed by an operation name: how many of that operation the session (segment) saw."""

EVENT_FAULT = "fuse.fault.injected"
EVENT_THROTTLE = "fuse.throttle.wait"
"""Span events that the fault and throttle layers add to the operation they acted on."""

# -- resource attributes --------------------------------------------------------------------
RESOURCE_MOUNTPOINT = "fuse.mountpoint"
RESOURCE_BACKING = "fuse.backing"
RESOURCE_VOLUME_ID = "fuse.volume.id"
SERVICE_NAME_DEFAULT = "cnfs-interposer"
