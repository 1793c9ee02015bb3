"""POSIX semantics that must match the native directory: permissions as a non-root user, sticky
directories, sparse files past 4 GiB, unlinked open files, concurrency, mmap and large directories."""

from __future__ import annotations

import errno
import mmap
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from interposer.mount.child import MountProcess

from .conftest import MountFactory, require

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"
"""The interpreter under /root is out of nobody's reach; the probes need only the standard library."""


def as_nobody(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet as nobody:nogroup; it prints one outcome per line."""
    require(os.access(SYSTEM_PYTHON, os.X_OK), f"{SYSTEM_PYTHON} (Debian python3), runnable by nobody")
    return subprocess.run(
        [SYSTEM_PYTHON, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        check=True,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        cwd="/",
    )


PROBE = """
import errno, os, sys
def attempt(label, call):
    try:
        call()
        print(label, "ok")
    except OSError as exc:
        print(label, errno.errorcode[exc.errno])
root = sys.argv[1]
p = lambda *parts: os.path.join(root, *parts)
attempt("read-private", lambda: open(p("private")).read())
attempt("read-public", lambda: open(p("public")).read())
attempt("write-public", lambda: open(p("public"), "a").write("x"))
attempt("create-in-closed", lambda: open(p("closed", "new"), "w"))
attempt("list-closed", lambda: os.listdir(p("closed")))
attempt("create-in-open", lambda: open(p("open", "mine"), "w").write("mine"))
attempt("chmod-not-mine", lambda: os.chmod(p("public"), 0o777))
attempt("chown-mine", lambda: os.chown(p("open", "mine"), 0, 0))
attempt("chmod-mine", lambda: os.chmod(p("open", "mine"), 0o600))
attempt("unlink-others-in-sticky", lambda: os.unlink(p("sticky", "roots")))
attempt("rename-others-in-sticky", lambda: os.rename(p("sticky", "roots"), p("sticky", "moved")))
attempt("create-in-sticky", lambda: open(p("sticky", "nobodys"), "w"))
attempt("unlink-mine-in-sticky", lambda: os.unlink(p("sticky", "nobodys")))
attempt("exec-noexec", lambda: os.execv(p("script"), [p("script")]))
attempt("utime-not-mine", lambda: os.utime(p("public"), (1, 1)))
attempt("utime-now-writable", lambda: os.utime(p("public")))
attempt("truncate-private", lambda: os.truncate(p("private"), 0))
attempt("setxattr-not-mine", lambda: os.setxattr(p("public"), "user.x", b"1"))
"""


def populate(root: Path) -> None:
    (root / "private").write_text("secret")
    (root / "private").chmod(0o600)
    (root / "public").write_text("open")
    (root / "public").chmod(0o666)
    (root / "closed").mkdir(mode=0o700)
    (root / "open").mkdir()
    (root / "open").chmod(0o777)
    (root / "sticky").mkdir()
    (root / "sticky").chmod(0o1777)
    (root / "sticky" / "roots").write_text("r")
    (root / "script").write_text("#!/bin/sh\n")
    (root / "script").chmod(0o644)


def test_permissions_as_nobody_match_native(mount_factory: MountFactory, scratch: Path) -> None:
    native = scratch / "native"
    native.mkdir(mode=0o755)
    mount = mount_factory()
    populate(native)
    populate(mount.mountpoint)
    expected = as_nobody(PROBE, str(native)).stdout
    assert as_nobody(PROBE, str(mount.mountpoint)).stdout == expected
    # The probe must have seen both refusals and successes, or it proves nothing.
    assert "EACCES" in expected
    assert "EPERM" in expected
    assert " ok" in expected
    assert os.stat(mount.backing / "open" / "mine").st_uid == NOBODY
    assert os.stat(mount.backing / "open" / "mine").st_gid == NOBODY


def test_new_objects_belong_to_the_caller_and_setgid_dirs_keep_their_group(mounted: MountProcess) -> None:
    shared = mounted.mountpoint / "shared"
    shared.mkdir()
    os.chown(shared, 0, 4321)
    shared.chmod(0o2777)
    as_nobody(
        """
        import os, sys
        base = sys.argv[1]
        open(os.path.join(base, "file"), "w").close()
        os.mkdir(os.path.join(base, "dir"))
        os.symlink("file", os.path.join(base, "link"))
        os.mkfifo(os.path.join(base, "fifo"))
        """,
        str(shared),
    )
    backing = mounted.backing / "shared"
    for name in ("file", "dir", "link", "fifo"):
        st = os.lstat(backing / name)
        assert (st.st_uid, st.st_gid) == (NOBODY, 4321), name
    assert os.stat(backing / "dir").st_mode & 0o2000


def test_sparse_file_beyond_4gib(mounted: MountProcess) -> None:
    path = mounted.mountpoint / "sparse"
    offset = 5 * 1024**3 + 17
    with path.open("wb") as handle:
        handle.seek(offset)
        handle.write(b"tail")
    st = os.stat(mounted.backing / "sparse")
    assert st.st_size == offset + 4
    assert st.st_blocks * 512 < 1024**2
    with path.open("rb") as handle:
        handle.seek(offset - 3)
        assert handle.read() == b"\0\0\0tail"
        handle.seek(4 * 1024**3)
        assert handle.read(10) == b"\0" * 10


def test_file_unlinked_while_open_stays_usable(mounted: MountProcess) -> None:
    path = mounted.mountpoint / "ghost"
    with path.open("w+b") as handle:
        handle.write(b"before")
        handle.flush()
        os.unlink(path)
        assert not path.exists()
        assert not (mounted.backing / "ghost").exists()
        handle.write(b" after")
        handle.flush()
        handle.seek(0)
        assert handle.read() == b"before after"
        assert os.fstat(handle.fileno()).st_nlink == 0
    assert mounted.status()["open_files"] == 0


def test_concurrent_writers_from_several_processes(mounted: MountProcess) -> None:
    script = """
    import os, sys
    path, index = sys.argv[1], int(sys.argv[2])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    for block in range(200):
        os.pwrite(fd, bytes([index]) * 4096, (block * 8 + index) * 4096)
    os.close(fd)
    fd = os.open(path + f".{index}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for line in range(500):
        os.write(fd, f"{index}:{line}\\n".encode())
    os.close(fd)
    """
    target = mounted.mountpoint / "shared.bin"
    processes = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), str(target), str(i)]) for i in range(8)
    ]
    assert [p.wait(timeout=120) for p in processes] == [0] * 8
    data = (mounted.backing / "shared.bin").read_bytes()
    assert len(data) == 200 * 8 * 4096
    for block in range(200 * 8):
        assert data[block * 4096 : (block + 1) * 4096] == bytes([block % 8]) * 4096
    for index in range(8):
        lines = (mounted.backing / f"shared.bin.{index}").read_text().splitlines()
        assert lines == [f"{index}:{line}" for line in range(500)]


def test_concurrent_metadata_from_threads(mounted: MountProcess) -> None:
    def churn(worker: int) -> int:
        base = mounted.mountpoint / f"w{worker}"
        base.mkdir()
        for index in range(100):
            (base / f"f{index}").write_text(str(index))
            os.rename(base / f"f{index}", base / f"g{index}")
        return len(os.listdir(base))

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(churn, range(8))) == [100] * 8


def test_shared_mmap_writes_reach_backing_and_private_do_not(mounted: MountProcess) -> None:
    path = mounted.mountpoint / "mapped"
    path.write_bytes(b"\0" * 16384)
    with path.open("r+b") as handle:
        shared = mmap.mmap(handle.fileno(), 16384, mmap.MAP_SHARED)
        shared[4096:4101] = b"HELLO"
        shared.flush()
        shared.close()
        private = mmap.mmap(handle.fileno(), 16384, mmap.MAP_PRIVATE)
        private[0:7] = b"PRIVATE"
        assert private[4096:4101] == b"HELLO"
        private.close()
    data = (mounted.backing / "mapped").read_bytes()
    assert data[4096:4101] == b"HELLO"
    assert data[0:7] == b"\0" * 7


def test_large_directory_lists_every_entry_once(mounted: MountProcess) -> None:
    directory = mounted.backing / "big"
    directory.mkdir()
    names = {f"entry-{index:05d}-{'x' * (index % 50)}" for index in range(12_000)}
    for name in names:
        (directory / name).touch()
    listed = os.listdir(mounted.mountpoint / "big")
    assert len(listed) == len(names)
    assert set(listed) == names


def test_readdir_resumes_exactly_under_concurrent_change(mounted: MountProcess) -> None:
    """Entries present for the whole listing appear exactly once, whatever is created or removed meanwhile."""
    directory = mounted.mountpoint / "churn"
    directory.mkdir()
    stable = {f"stable-{index}" for index in range(3000)}
    doomed = [f"doomed-{index}" for index in range(3000)]
    for name in [*stable, *doomed]:
        (mounted.backing / "churn" / name).touch()
    seen: list[str] = []
    with os.scandir(directory) as entries:
        for count, entry in enumerate(entries):
            seen.append(entry.name)
            if count == 100:
                for name in doomed:
                    os.unlink(directory / name)
                for index in range(3000):
                    (directory / f"born-{index}").touch()
    assert len(seen) == len(set(seen)), "an entry was listed twice"
    assert stable <= set(seen), "a stable entry was skipped"


def test_seekdir_telldir_offsets_resume_listing(mounted: MountProcess) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.opendir.restype = ctypes.c_void_p
    libc.readdir.restype = ctypes.c_void_p
    libc.readdir.argtypes = [ctypes.c_void_p]
    libc.telldir.argtypes = [ctypes.c_void_p]
    libc.telldir.restype = ctypes.c_long
    libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
    libc.closedir.argtypes = [ctypes.c_void_p]
    for index in range(5000):
        (mounted.backing / f"n{index}").touch()
    name_offset = 19  # d_ino (8) + d_off (8) + d_reclen (2) + d_type (1)

    def read_all(handle: int) -> list[bytes]:
        names = []
        while entry := libc.readdir(handle):
            names.append(ctypes.string_at(entry + name_offset))
        return names

    handle = libc.opendir(bytes(mounted.mountpoint))
    assert handle
    for _ in range(2500):
        assert libc.readdir(handle)
    position = libc.telldir(handle)
    rest = read_all(handle)
    libc.seekdir(handle, position)
    assert read_all(handle) == rest
    libc.rewinddir(ctypes.c_void_p(handle))
    assert len(read_all(handle)) == 5002
    libc.closedir(handle)


def test_errors_carry_the_native_errno(mounted: MountProcess) -> None:
    mnt = mounted.mountpoint
    (mnt / "file").write_text("")
    cases: list[tuple[Callable[[], object], int]] = [
        (lambda: os.mkdir(mnt / "file"), errno.EEXIST),
        (lambda: os.listdir(mnt / "file"), errno.ENOTDIR),
        (lambda: os.rmdir(mnt / "file"), errno.ENOTDIR),
        ((mnt / "file" / "x").read_text, errno.ENOTDIR),
        (lambda: os.readlink(mnt / "file"), errno.EINVAL),
        (lambda: os.getxattr(mnt / "file", "user.none"), errno.ENODATA),
        (lambda: os.symlink("x", mnt / ("n" * 256)), errno.ENAMETOOLONG),
    ]
    for call, expected in cases:
        with pytest.raises(OSError) as excinfo:
            call()
        assert excinfo.value.errno == expected
