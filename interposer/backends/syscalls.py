"""Linux syscalls that the os module does not expose, called through ctypes.

The passthrough backend holds an ``O_PATH`` descriptor per inode and must act on
the object itself, symlinks included, without a name that could be raced:
``renameat2`` (RENAME_NOREPLACE, RENAME_EXCHANGE), ``utimensat`` with
``UTIME_OMIT`` and ``AT_EMPTY_PATH``, ``fchownat`` and ``linkat`` with
``AT_EMPTY_PATH``.  Python offers none of these combinations.
"""

from __future__ import annotations

import ctypes
import errno
import os

AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
UTIME_OMIT = (1 << 30) - 2

_libc = ctypes.CDLL(None, use_errno=True)
_EMPTY = b""


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_TimespecPair = _Timespec * 2


def _check(result: int) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def renameat2(old_dir: int, old_name: bytes, new_dir: int, new_name: bytes, flags: int) -> None:
    """Rename with the flags of renameat2(2); RENAME_EXCHANGE swaps both names atomically."""
    _check(_libc.renameat2(old_dir, old_name, new_dir, new_name, ctypes.c_uint(flags)))


def set_times(fd: int, atime_ns: int | None, mtime_ns: int | None) -> None:
    """Set the times of the object behind an O_PATH descriptor; ``None`` leaves a time as it is."""
    times = _TimespecPair()
    for slot, value in zip(times, (atime_ns, mtime_ns), strict=True):
        if value is None:
            slot.tv_sec, slot.tv_nsec = 0, UTIME_OMIT
        else:
            slot.tv_sec, slot.tv_nsec = divmod(value, 1_000_000_000)
    _check(_libc.utimensat(fd, _EMPTY, times, AT_EMPTY_PATH))


def set_owner(fd: int, uid: int, gid: int) -> None:
    """Change the owner of the object behind an O_PATH descriptor, never following a symlink."""
    _check(_libc.fchownat(fd, _EMPTY, uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))


def link_to(fd: int, new_dir: int, new_name: bytes) -> None:
    """Create a hard link to the object behind an O_PATH descriptor (needs CAP_DAC_READ_SEARCH)."""
    _check(_libc.linkat(fd, _EMPTY, new_dir, new_name, AT_EMPTY_PATH))


_MAX_HANDLE_SZ = 128


class _FileHandle(ctypes.Structure):
    _fields_ = [
        ("handle_bytes", ctypes.c_uint),
        ("handle_type", ctypes.c_int),
        ("f_handle", ctypes.c_ubyte * _MAX_HANDLE_SZ),
    ]


def file_handle(fd: int) -> bytes:
    """The kernel's persistent handle for the object behind ``fd`` (name_to_handle_at).

    A handle names an inode and its generation, so reopening it later reaches
    exactly this object or fails with ESTALE; it costs no descriptor meanwhile.
    """
    handle = _FileHandle(handle_bytes=_MAX_HANDLE_SZ)
    mount_id = ctypes.c_int()
    _check(_libc.name_to_handle_at(fd, _EMPTY, ctypes.byref(handle), ctypes.byref(mount_id), AT_EMPTY_PATH))
    return bytes(handle)[: 8 + handle.handle_bytes]


def open_file_handle(mount_fd: int, handle: bytes, flags: int) -> int:
    """Open the object a ``file_handle`` names, on the file system of ``mount_fd`` (open_by_handle_at)."""
    buffer = ctypes.create_string_buffer(handle, len(handle))
    fd: int = _libc.open_by_handle_at(mount_fd, buffer, flags)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_large_buffers_on_heap(largest: int = 8 << 20, keep: int = 64 << 20) -> None:
    """Serve allocations up to ``largest`` bytes from the heap and keep up to ``keep`` bytes of it.

    pyfuse3 copies each write request (up to 1 MiB) into a new ``bytes`` object.
    Above glibc's default mmap threshold that is a fresh mapping per request,
    page-faulted in and unmapped again, which halved write throughput when
    measured (docs/performance.md).  Reused heap memory is already mapped.
    """
    if not _libc.mallopt(_M_MMAP_THRESHOLD, largest) or not _libc.mallopt(_M_TRIM_THRESHOLD, keep):
        raise OSError(errno.EINVAL, "mallopt refused the thresholds")
