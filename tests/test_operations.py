"""Every operation pyfuse3 offers, exercised through a real mount and checked on the backing directory."""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

import pytest

from interposer.backends import syscalls
from interposer.mount.child import MountProcess

from .conftest import MountFactory


def test_create_write_read_back_lands_in_backing(mounted: MountProcess) -> None:
    mnt, backing = mounted.mountpoint, mounted.backing
    payload = os.urandom(300_000)
    (mnt / "data.bin").write_bytes(payload)
    assert (backing / "data.bin").read_bytes() == payload
    assert (mnt / "data.bin").read_bytes() == payload
    assert (mnt / "data.bin").stat().st_size == len(payload)


def test_lookup_getattr_match_backing(mounted: MountProcess) -> None:
    (mounted.backing / "f").write_bytes(b"x" * 1234)
    os.utime(mounted.backing / "f", ns=(1_000_000_123, 2_000_000_456))
    native, through = os.stat(mounted.backing / "f"), os.stat(mounted.mountpoint / "f")
    for field in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_ino", "st_atime_ns", "st_mtime_ns"):
        assert getattr(through, field) == getattr(native, field), field
    with pytest.raises(FileNotFoundError):
        os.stat(mounted.mountpoint / "missing")


def test_setattr_mode_owner_times_size(mounted: MountProcess) -> None:
    path = mounted.mountpoint / "f"
    path.write_bytes(b"0123456789")
    os.chmod(path, 0o640)
    os.chown(path, 1234, 5678)
    os.truncate(path, 4)
    os.utime(path, ns=(111_000_000_000, 222_000_000_000))
    st = os.stat(mounted.backing / "f")
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert (st.st_atime_ns, st.st_mtime_ns) == (111_000_000_000, 222_000_000_000)
    assert (mounted.backing / "f").read_bytes() == b"0123"


def test_setattr_one_time_leaves_the_other(mounted: MountProcess) -> None:
    path = mounted.mountpoint / "f"
    path.write_bytes(b"")
    os.utime(path, ns=(5_000_000_000, 7_000_000_000))
    fd = os.open(path, os.O_RDONLY)
    try:
        # utimensat with UTIME_OMIT for mtime: only atime changes.
        os.utime(fd, ns=(9_000_000_000, os.stat(path).st_mtime_ns))
    finally:
        os.close(fd)
    st = os.stat(mounted.backing / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (9_000_000_000, 7_000_000_000)


def test_ftruncate_on_open_handle(mounted: MountProcess) -> None:
    path = mounted.mountpoint / "f"
    with path.open("w+b") as handle:
        handle.write(b"abcdefgh")
        handle.flush()
        os.ftruncate(handle.fileno(), 3)
        handle.seek(0)
        assert handle.read() == b"abc"
        os.ftruncate(handle.fileno(), 6)
        handle.seek(0)
        assert handle.read() == b"abc\0\0\0"
    assert (mounted.backing / "f").read_bytes() == b"abc\0\0\0"


def test_symlink_readlink_and_lchown(mounted: MountProcess) -> None:
    mnt = mounted.mountpoint
    (mnt / "target").write_text("t")
    os.symlink("target", mnt / "link")
    os.symlink("/etc/passwd", mnt / "abs")
    assert os.readlink(mnt / "link") == "target"
    assert os.readlink(mounted.backing / "abs") == "/etc/passwd"
    assert (mnt / "link").read_text() == "t"
    os.chown(mnt / "link", 42, 43, follow_symlinks=False)
    assert (os.lstat(mounted.backing / "link").st_uid, os.lstat(mounted.backing / "target").st_uid) == (42, 0)
    assert stat.S_ISLNK(os.lstat(mnt / "link").st_mode)


def test_mknod_fifo_and_socket(mounted: MountProcess) -> None:
    mnt = mounted.mountpoint
    os.mkfifo(mnt / "fifo", 0o620)
    assert stat.S_ISFIFO(os.stat(mounted.backing / "fifo").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(mnt / "fifo").st_mode) == 0o620 & ~umask
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(mnt / "sock"))
    assert stat.S_ISSOCK(os.stat(mounted.backing / "sock").st_mode)


def test_fifo_in_mount_carries_data(mounted: MountProcess) -> None:
    fifo = mounted.mountpoint / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY)
    os.write(writer, b"through the fifo")
    assert os.read(reader, 100) == b"through the fifo"
    os.close(writer)
    os.close(reader)


def test_mkdir_rmdir_unlink(mounted: MountProcess) -> None:
    mnt = mounted.mountpoint
    os.mkdir(mnt / "d", 0o750)
    assert stat.S_IMODE(os.stat(mounted.backing / "d").st_mode) == 0o750
    (mnt / "d" / "f").write_text("x")
    with pytest.raises(OSError, match="not empty") as excinfo:
        os.rmdir(mnt / "d")
    assert excinfo.value.errno == errno.ENOTEMPTY
    os.unlink(mnt / "d" / "f")
    os.rmdir(mnt / "d")
    assert not (mounted.backing / "d").exists()
    with pytest.raises(FileNotFoundError):
        os.unlink(mnt / "nothing")


def test_rename_plain_noreplace_exchange(mounted: MountProcess) -> None:
    mnt, backing = mounted.mountpoint, mounted.backing
    (mnt / "a").write_text("A")
    (mnt / "b").write_text("B")
    os.mkdir(mnt / "dir")
    fd = os.open(mnt, os.O_PATH)
    try:
        with pytest.raises(FileExistsError):
            syscalls.renameat2(fd, b"a", fd, b"b", syscalls.RENAME_NOREPLACE)
        syscalls.renameat2(fd, b"a", fd, b"b", syscalls.RENAME_EXCHANGE)
        assert ((backing / "a").read_text(), (backing / "b").read_text()) == ("B", "A")
        with pytest.raises(FileNotFoundError):
            syscalls.renameat2(fd, b"a", fd, b"zz", syscalls.RENAME_EXCHANGE)
        syscalls.renameat2(fd, b"a", fd, b"c", syscalls.RENAME_NOREPLACE)
    finally:
        os.close(fd)
    os.rename(mnt / "c", mnt / "dir" / "c")
    os.rename(mnt / "b", mnt / "dir" / "c")  # replaces
    assert (backing / "dir" / "c").read_text() == "A"
    assert sorted(os.listdir(mnt)) == ["dir"]
    assert (mnt / "dir" / "c").read_text() == "A"


def test_hard_links_share_inode_and_count(mounted: MountProcess) -> None:
    mnt = mounted.mountpoint
    (mnt / "a").write_text("shared")
    os.link(mnt / "a", mnt / "b")
    assert os.stat(mnt / "a").st_nlink == 2
    assert os.stat(mnt / "a").st_ino == os.stat(mnt / "b").st_ino == os.stat(mounted.backing / "a").st_ino
    with (mnt / "b").open("a") as handle:
        handle.write("+")
    assert (mnt / "a").read_text() == "shared+"
    os.unlink(mnt / "a")
    assert os.stat(mnt / "b").st_nlink == 1


def test_open_flags_append_trunc_excl(mounted: MountProcess) -> None:
    path = mounted.mountpoint / "f"
    path.write_bytes(b"start")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"-one")
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b"-two")  # O_APPEND ignores the offset
    os.close(fd)
    assert (mounted.backing / "f").read_bytes() == b"start-one-two"
    with pytest.raises(FileExistsError):
        os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    os.close(os.open(path, os.O_WRONLY | os.O_TRUNC))
    assert (mounted.backing / "f").read_bytes() == b""
    fd = os.open(mounted.mountpoint / "new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o604)
    os.close(fd)
    assert stat.S_IMODE(os.stat(mounted.backing / "new").st_mode) == 0o604


def test_o_nofollow_opens_files_and_refuses_symlinks(mounted: MountProcess) -> None:
    """tar and rsync open with O_NOFOLLOW; the kernel resolves the path, the backend must not refuse."""
    (mounted.mountpoint / "file").write_text("plain")
    os.symlink("file", mounted.mountpoint / "link")
    fd = os.open(mounted.mountpoint / "file", os.O_RDONLY | os.O_NOFOLLOW | os.O_NOATIME)
    assert os.read(fd, 10) == b"plain"
    os.close(fd)
    with pytest.raises(OSError) as excinfo:
        os.open(mounted.mountpoint / "link", os.O_RDONLY | os.O_NOFOLLOW)
    assert excinfo.value.errno == errno.ELOOP


def test_o_direct_reads_and_writes_aligned_buffers(mounted: MountProcess) -> None:
    import mmap

    path = mounted.mountpoint / "direct"
    buffer = mmap.mmap(-1, 8192)
    buffer.write(b"D" * 8192)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    try:
        assert os.pwritev(fd, [buffer], 0) == 8192
        target = mmap.mmap(-1, 4096)
        assert os.preadv(fd, [target], 4096) == 4096
        assert target[:] == b"D" * 4096
    finally:
        os.close(fd)
    assert (mounted.backing / "direct").read_bytes() == b"D" * 8192


def test_fsync_fdatasync_fsyncdir(mounted: MountProcess) -> None:
    path = mounted.mountpoint / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"durable")
    os.fsync(fd)
    os.fdatasync(fd)
    os.close(fd)
    dfd = os.open(mounted.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)
    assert (mounted.backing / "f").read_bytes() == b"durable"


def test_statfs_matches_backing(mounted: MountProcess) -> None:
    native, through = os.statvfs(mounted.backing), os.statvfs(mounted.mountpoint)
    assert (through.f_bsize, through.f_blocks, through.f_files, through.f_namemax) == (
        native.f_bsize,
        native.f_blocks,
        native.f_files,
        native.f_namemax,
    )


def test_xattrs_all_four_operations(mounted: MountProcess) -> None:
    path = mounted.mountpoint / "f"
    path.write_text("x")
    os.setxattr(path, "user.colour", b"blue")
    os.setxattr(path, "user.size", b"")
    assert os.getxattr(mounted.backing / "f", "user.colour") == b"blue"
    assert os.getxattr(path, "user.size") == b""
    assert sorted(os.listxattr(path)) == ["user.colour", "user.size"]
    with pytest.raises(FileExistsError):
        os.setxattr(path, "user.colour", b"red", os.XATTR_CREATE)
    with pytest.raises(OSError, match="No data") as excinfo:
        os.setxattr(path, "user.none", b"v", os.XATTR_REPLACE)
    assert excinfo.value.errno == errno.ENODATA
    os.removexattr(path, "user.colour")
    with pytest.raises(OSError, match="No data"):
        os.getxattr(path, "user.colour")
    assert os.listxattr(mounted.backing / "f") == ["user.size"]


def test_readdir_lists_dot_entries_and_types(mounted: MountProcess) -> None:
    mnt = mounted.mountpoint
    os.mkdir(mnt / "d")
    (mnt / "f").write_text("")
    os.symlink("f", mnt / "l")
    entries = {entry.name: entry for entry in os.scandir(mnt)}
    assert set(entries) == {"d", "f", "l"}
    assert entries["d"].is_dir()
    assert entries["l"].is_symlink()
    assert entries["f"].is_file()
    assert entries["f"].inode() == os.stat(mounted.backing / "f").st_ino
    import subprocess

    listing = subprocess.run(["ls", "-a", str(mnt)], capture_output=True, text=True, check=True).stdout.split()
    assert listing[:2] == [".", ".."]


def test_mount_of_a_symlinked_backing_follows_it(mount_factory: MountFactory, scratch: Path) -> None:
    real = scratch / "real"
    real.mkdir()
    (real / "inside").write_text("here")
    (scratch / "alias").symlink_to(real)
    mount = mount_factory(scratch / "alias")
    assert (mount.mountpoint / "inside").read_text() == "here"


def test_operations_pyfuse3_lacks_behave_as_documented(mounted: MountProcess) -> None:
    """docs/operations.md says what the kernel does for operations pyfuse3 does not expose."""
    import fcntl
    import subprocess
    import sys
    import textwrap

    path = mounted.mountpoint / "f"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(OSError) as excinfo:
            fcntl.ioctl(fd, 0x80086601)  # FS_IOC_GETFLAGS
        assert excinfo.value.errno == errno.ENOTTY
        # fallocate(2) is refused; posix_fallocate(3) falls back to writing, which reaches the backing file.
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.fallocate(fd, 0, ctypes.c_long(0), ctypes.c_long(100)) == -1
        assert ctypes.get_errno() == errno.EOPNOTSUPP
        os.posix_fallocate(fd, 0, 100)
        assert os.stat(mounted.backing / "f").st_size == 100
        os.ftruncate(fd, 10)
        # copy_file_range falls back to reads and writes that reach the backing file.
        target = os.open(mounted.mountpoint / "copy", os.O_RDWR | os.O_CREAT, 0o644)
        assert os.copy_file_range(fd, target, 10) == 10
        os.close(target)
        assert (mounted.backing / "copy").read_bytes() == b"0123456789"
        # SEEK_DATA/SEEK_HOLE: all data, one hole at the end.
        assert os.lseek(fd, 0, os.SEEK_DATA) == 0
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 10
        # Locks are local to the mount: a second process sees the first one's lock.
        fcntl.flock(fd, fcntl.LOCK_EX)
        probe = textwrap.dedent(
            """
            import fcntl, os, sys
            fd = os.open(sys.argv[1], os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                print("free")
            except BlockingIOError:
                print("locked")
            """
        )
        seen = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=True)
        assert seen.stdout.strip() == "locked"
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as excinfo:
        os.open(mounted.mountpoint, os.O_TMPFILE | os.O_RDWR, 0o600)
    assert excinfo.value.errno == errno.EOPNOTSUPP
