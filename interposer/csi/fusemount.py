"""The privileged half of a volume: open /dev/fuse and mount(2) it at the target, as libfuse would.

The node plugin holds CAP_SYS_ADMIN; a volume's server does not need it.  The
plugin opens /dev/fuse, mounts that descriptor at the target with the options
libfuse's ``fuse_mount_sys`` would pass (lib/mount.c, recorded in
tests/facts/libfuse.json), and hands the descriptor to the server, which serves
``/dev/fd/N``: libfuse's ``fuse_session_mount`` takes such a mountpoint as an
already-mounted channel and never unmounts it.  The plugin closes its own copy
right after the handover, so the connection lives exactly as long as the server:
if the server dies the kernel aborts the connection (ENOTCONN), it never hangs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..config import InterposerConfig

DEVICE = "/dev/fuse"
SUBTYPE = "interposer"
FSTYPE = f"fuse.{SUBTYPE}"

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
DEFAULT_FLAGS = MS_NOSUID | MS_NODEV
"""libfuse's parse_mount_opts starts from these flags."""
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


@dataclass(frozen=True)
class FuseMountOptions:
    """What mount(2) is given for one volume."""

    source: str
    read_only: bool
    allow_other: bool

    @classmethod
    def of(cls, config: InterposerConfig) -> FuseMountOptions:
        return cls(source=config.fuse.fsname, read_only=config.fuse.read_only, allow_other=config.fuse.allow_other)

    def flags(self) -> int:
        return DEFAULT_FLAGS | (MS_RDONLY if self.read_only else 0)

    def data(self, fd: int, rootmode: int, uid: int, gid: int) -> str:
        """The kernel options: libfuse's ``fd=%i,rootmode=%o,user_id=%u,group_id=%u`` then the kernel options."""
        options = [f"fd={fd}", f"rootmode={rootmode:o}", f"user_id={uid}", f"group_id={gid}", "default_permissions"]
        if self.allow_other:
            options.append("allow_other")
        return ",".join(options)


def mount_fuse(target: Path, options: FuseMountOptions) -> int:
    """Open /dev/fuse, mount it at ``target`` and return the descriptor (close-on-exec); raises OSError."""
    rootmode = stat.S_IFMT(os.stat(target).st_mode)
    fd = os.open(DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        data = options.data(fd, rootmode, os.getuid(), os.getgid())
        result = _libc.mount(
            options.source.encode(), os.fsencode(target), FSTYPE.encode(), options.flags(), data.encode()
        )
        if result != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"mount {FSTYPE} at {target}: {os.strerror(code)}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def unmount_fuse(target: Path) -> None:
    """Unmount; a busy mount is detached (kubelet has stopped the pod's containers, stragglers keep theirs)."""
    path = os.fsencode(target)
    if _libc.umount2(path, 0) == 0:
        return
    code = ctypes.get_errno()
    if code == errno.EINVAL:  # not a mount point: already done
        return
    if _libc.umount2(path, MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code != errno.EINVAL:
            raise OSError(code, f"unmount {target}: {os.strerror(code)}")
