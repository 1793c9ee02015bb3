"""Both backends behind the one Backend protocol: the same requests get the same answers, without a mount."""

from __future__ import annotations

import errno
import os
import stat

import pyfuse3

from interposer.fuse.request import Request
from interposer.names import OpName

from .conftest import StackFactory
from .stack import CALLER

ROOT = pyfuse3.ROOT_INODE


def test_a_workload_gets_the_same_answers_from_both_backends(make_stack: StackFactory, backend_kind: str) -> None:
    stack = make_stack({"backend": {"kind": backend_kind}})
    fs, run = stack.fs, stack.run
    directory = run(lambda: fs.mkdir(ROOT, b"d", 0o755, CALLER))
    assert stat.S_ISDIR(directory.st_mode)
    assert run(lambda: fs.getattr(ROOT, CALLER)).st_nlink == 3
    fh, inode = stack.create(b"f", directory.st_ino)
    assert run(lambda: fs.write(fh, 0, b"hello world")) == 11
    assert run(lambda: fs.read(fh, 6, 100)) == b"world"
    assert run(lambda: fs.read(fh, 100, 10)) == b""
    run(lambda: fs.flush(fh))
    run(lambda: fs.fsync(fh, True))
    run(lambda: fs.release(fh))
    assert run(lambda: fs.getattr(inode, CALLER)).st_size == 11

    run(lambda: fs.setxattr(inode, b"user.k", b"v", CALLER))
    assert run(lambda: fs.getxattr(inode, b"user.k", CALLER)) == b"v"
    assert b"user.k" in run(lambda: fs.listxattr(inode, CALLER))
    run(lambda: fs.removexattr(inode, b"user.k", CALLER))
    assert stack.errno_of(lambda: fs.getxattr(inode, b"user.k", CALLER)) == errno.ENODATA

    link = run(lambda: fs.link(inode, ROOT, b"hard", CALLER))
    assert (link.st_ino, link.st_nlink) == (inode, 2)
    symlink = run(lambda: fs.symlink(ROOT, b"s", b"d/f", CALLER))
    assert run(lambda: fs.readlink(symlink.st_ino, CALLER)) == b"d/f"
    run(lambda: fs.rename(directory.st_ino, b"f", ROOT, b"moved", 0, CALLER))
    assert run(lambda: fs.lookup(ROOT, b"moved", CALLER)).st_ino == inode
    assert stack.errno_of(lambda: fs.lookup(directory.st_ino, b"f", CALLER)) == errno.ENOENT

    dh = run(lambda: fs.opendir(ROOT, CALLER))
    names = [name for name, _ in stack.readdir(dh)]
    assert sorted(names) == sorted([b".", b"..", b"d", b"hard", b"s", b"moved"])
    first = stack.readdir(dh, 0, room=2)
    rest = stack.readdir(dh, first[-1][1])
    assert [name for name, _ in first + rest] == names  # resumed from the snapshot: nothing lost or repeated
    run(lambda: fs.releasedir(dh))

    run(lambda: fs.unlink(ROOT, b"hard", CALLER))
    assert run(lambda: fs.getattr(inode, CALLER)).st_nlink == 1
    assert stack.errno_of(lambda: fs.rmdir(ROOT, b"moved", CALLER)) == errno.ENOTDIR
    run(lambda: fs.rmdir(ROOT, b"d", CALLER))
    assert run(lambda: fs.getattr(ROOT, CALLER)).st_nlink == 2
    assert run(lambda: fs.statfs(CALLER)).f_namemax == 255
    assert stack.backend.stats()["open_files"] == stack.backend.stats()["open_dirs"] == 0


def test_a_handle_request_is_resolved_to_its_inode_path_and_opener(make_stack: StackFactory, backend_kind: str) -> None:
    stack = make_stack({"backend": {"kind": backend_kind}})
    fh, inode = stack.create(b"resolved")
    request = Request(OpName.READ)
    request.fh = fh
    request.resolve(stack.backend)
    assert (request.inode, request.path) == (inode, "/resolved")
    assert (request.pid, request.uid, request.gid) == (CALLER.pid, CALLER.uid, CALLER.gid)
    stack.run(lambda: stack.fs.unlink(pyfuse3.ROOT_INODE, b"resolved", CALLER))
    request = Request(OpName.RELEASE)
    request.fh = fh
    assert request.resolve(stack.backend).path.endswith(" (deleted)")


def test_the_passthrough_backend_writes_through_to_the_backing_directory(make_stack: StackFactory) -> None:
    stack = make_stack()
    fh, _ = stack.create(b"on-disk")
    stack.run(lambda: stack.fs.write(fh, 0, b"bytes"))
    stack.run(lambda: stack.fs.release(fh))
    with open(stack.backend_path(b"on-disk"), "rb") as file:
        assert file.read() == b"bytes"


def test_the_fake_backend_leaves_the_backing_directory_alone(make_stack: StackFactory) -> None:
    stack = make_stack({"backend": {"kind": "fake"}})
    fh, _ = stack.create(b"in-memory")
    stack.run(lambda: stack.fs.write(fh, 0, b"bytes"))
    assert os.listdir(stack.backing) == []
    assert stack.backend.stats()["fake_kept_bytes"] == 5


def test_with_xattrs_off_both_backends_tell_the_kernel_to_stop_asking(
    make_stack: StackFactory, backend_kind: str
) -> None:
    """ENOSYS for getting and listing (the kernel then answers them itself, and stops the probe before each
    write); ENOTSUP for setting and removing, which the kernel keeps sending (the trace-context announcement)."""
    stack = make_stack({"backend": {"kind": backend_kind}, "fuse": {"xattrs": False}})
    fh, inode = stack.create(b"plain")
    stack.run(lambda: stack.fs.release(fh))
    fs = stack.fs
    assert stack.errno_of(lambda: fs.getxattr(inode, b"security.capability", CALLER)) == errno.ENOSYS
    assert stack.errno_of(lambda: fs.listxattr(inode, CALLER)) == errno.ENOSYS
    assert stack.errno_of(lambda: fs.setxattr(inode, b"user.k", b"v", CALLER)) == errno.ENOTSUP
    assert stack.errno_of(lambda: fs.removexattr(inode, b"user.k", CALLER)) == errno.ENOTSUP
