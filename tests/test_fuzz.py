"""A seeded differential fuzzer: the same random operations on a native directory and through the mount.

Every call's outcome (value or errno) must be identical, and at the end both
trees must be identical byte for byte, with modes, link counts, symlink targets
and xattrs.  Names come from a small pool, so operations collide often:
renames over existing files, links to unlinked names, rmdir of full
directories, writes through handles whose file was renamed or unlinked.
"""

from __future__ import annotations

import functools
import os
import random
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from interposer.backends import syscalls
from interposer.mount.child import MountProcess

from .conftest import MountFactory

Outcome = tuple[str, Any]
_AT_FDCWD = -100


def _outcome(call: Callable[[], Any]) -> Outcome:
    try:
        return ("ok", call())
    except OSError as exc:
        return ("err", exc.errno)


class World:
    """One side of the comparison: a root directory and the handles opened in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.handles: list[int | None] = [None] * 4

    def path(self, relative: str) -> str:
        return os.path.join(self.root, relative)

    def close_all(self) -> None:
        for slot, fd in enumerate(self.handles):
            if fd is not None:
                os.close(fd)
                self.handles[slot] = None


class Fuzzer:
    """Draws operations from a seeded generator and applies each to every world."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.dirs = ["", "d0", "d1", "d0/d2", "d1/d3"]
        self.files = ["f0", "f1", "f2", "f3"]

    def name(self, kind: str = "file") -> str:
        """A path; mostly of the kind asked for, sometimes anything, so that kinds collide."""
        rng = self.rng
        if rng.random() < 0.2:
            parent = rng.choice(self.dirs)
            leaf = rng.choice([*self.files, "d0", "d1", "d2", "d3", "s0"])
            return os.path.join(parent, leaf) if parent else leaf
        if kind == "dir":
            return rng.choice(self.dirs[1:])
        parent = rng.choice(self.dirs)
        return os.path.join(parent, rng.choice(self.files)) if parent else rng.choice(self.files)

    def operation(self) -> tuple[str, Callable[[World], Any]]:
        rng = self.rng
        kind = rng.choice(
            [
                "create", "create", "write", "write", "read", "truncate", "rename", "rename2", "link",
                "unlink", "mkdir", "mkdir", "rmdir", "chmod", "symlink", "readlink", "stat", "listdir",
                "setxattr", "getxattr", "listxattr", "removexattr", "hold", "hold_write", "hold_read", "hold_close",
            ]
        )  # fmt: skip
        dir_kinds = ("mkdir", "rmdir", "listdir")
        a = self.name("dir" if kind in dir_kinds else "file")
        b = self.name("dir" if kind in dir_kinds and rng.random() < 0.5 else "file")
        offset = rng.choice([0, 1, 4095, 4096, 10_000, rng.randrange(0, 70_000)])
        size = rng.choice([0, 1, 100, 4096, 5000, rng.randrange(0, 40_000)])
        data = bytes(rng.getrandbits(8) for _ in range(min(size, 64))) * (size // 64 + 1)
        data = data[:size]
        mode = rng.choice([0o600, 0o644, 0o755, 0o700, 0o4755, 0o1777, 0o000])
        slot = rng.randrange(4)
        flags = rng.choice([0, syscalls.RENAME_NOREPLACE, syscalls.RENAME_EXCHANGE])
        xname = rng.choice(["user.a", "user.b"])
        excl = rng.random() < 0.3
        trunc = rng.random() < 0.3
        append = rng.random() < 0.2

        def create(w: World) -> int:
            extra = (os.O_EXCL if excl else 0) | (os.O_TRUNC if trunc else 0) | (os.O_APPEND if append else 0)
            fd = os.open(w.path(a), os.O_WRONLY | os.O_CREAT | extra, 0o644)
            try:
                return os.write(fd, data)
            finally:
                os.close(fd)

        def write(w: World) -> int:
            fd = os.open(w.path(a), os.O_WRONLY | (os.O_APPEND if append else 0))
            try:
                return os.pwrite(fd, data, offset)
            finally:
                os.close(fd)

        def read(w: World) -> bytes:
            fd = os.open(w.path(a), os.O_RDONLY)
            try:
                return os.pread(fd, size, offset)
            finally:
                os.close(fd)

        def hold(w: World) -> bool:
            if w.handles[slot] is not None:
                os.close(w.handles[slot])  # type: ignore[arg-type]
                w.handles[slot] = None
            w.handles[slot] = os.open(w.path(a), os.O_RDWR)
            return True

        def hold_write(w: World) -> int | None:
            fd = w.handles[slot]
            return None if fd is None else os.pwrite(fd, data, offset)

        def hold_read(w: World) -> bytes | None:
            fd = w.handles[slot]
            return None if fd is None else os.pread(fd, size, offset)

        def hold_close(w: World) -> bool:
            fd = w.handles[slot]
            w.handles[slot] = None
            if fd is not None:
                os.close(fd)
            return fd is not None

        def stat_of(w: World) -> tuple[int, int, int]:
            st = os.lstat(w.path(a))
            return (st.st_mode, st.st_size if not stat.S_ISDIR(st.st_mode) else 0, st.st_nlink)

        def rename2(w: World) -> None:
            syscalls.renameat2(_AT_FDCWD, os.fsencode(w.path(a)), _AT_FDCWD, os.fsencode(w.path(b)), flags)

        actions: dict[str, Callable[[World], Any]] = {
            "create": create,
            "write": write,
            "read": read,
            "truncate": lambda w: os.truncate(w.path(a), offset),
            "rename": lambda w: os.rename(w.path(a), w.path(b)),
            "rename2": rename2,
            "link": lambda w: os.link(w.path(a), w.path(b), follow_symlinks=False),
            "unlink": lambda w: os.unlink(w.path(a)),
            "mkdir": lambda w: os.mkdir(w.path(a), 0o755),
            "rmdir": lambda w: os.rmdir(w.path(a)),
            "chmod": lambda w: os.chmod(w.path(a), mode),
            "symlink": lambda w: os.symlink(b, w.path(a)),
            "readlink": lambda w: os.readlink(w.path(a)),
            "stat": stat_of,
            "listdir": lambda w: sorted(os.listdir(w.path(a))),
            "setxattr": lambda w: os.setxattr(w.path(a), xname, data[:100], follow_symlinks=False),
            "getxattr": lambda w: os.getxattr(w.path(a), xname, follow_symlinks=False),
            "listxattr": lambda w: sorted(os.listxattr(w.path(a), follow_symlinks=False)),
            "removexattr": lambda w: os.removexattr(w.path(a), xname, follow_symlinks=False),
            "hold": hold,
            "hold_write": hold_write,
            "hold_read": hold_read,
            "hold_close": hold_close,
        }
        return f"{kind}({a!r}, {b!r}, off={offset}, size={size}, mode={mode:o}, flags={flags})", actions[kind]


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything the comparison cares about, for every object in a tree."""
    tree: dict[str, tuple[Any, ...]] = {}
    for directory, subdirs, files in os.walk(root):
        for name in subdirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            relative = os.path.relpath(path, root)
            xattrs = (
                () if stat.S_ISLNK(st.st_mode) else tuple(sorted((x, os.getxattr(path, x)) for x in os.listxattr(path)))
            )
            if stat.S_ISREG(st.st_mode):
                content: Any = Path(path).read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            else:
                content = None
            tree[relative] = (st.st_mode, st.st_nlink, st.st_uid, st.st_gid, content, xattrs)
    return tree


CACHE_VARIANTS = {
    "default": [],
    "writeback": ["--writeback-cache"],
    "long-caches": ["--entry-timeout", "60", "--attr-timeout", "60", "--negative-timeout", "60", "--keep-cache"],
    "direct-io": ["--direct-io", "--entry-timeout", "0", "--attr-timeout", "0"],
    "tiny-fd-pool": ["--config", str(Path(__file__).parent / "configs" / "tiny-fd-pool.yaml")],
    "fake-backend": ["--config", str(Path(__file__).parent / "configs" / "fake.yaml")],
}


@pytest.mark.parametrize("variant", list(CACHE_VARIANTS))
@pytest.mark.parametrize("seed", [1, 2])
def test_mount_behaves_exactly_like_native_directory(
    mount_factory: MountFactory, scratch: Path, seed: int, variant: str
) -> None:
    native = scratch / "native"
    native.mkdir()
    mount: MountProcess = mount_factory(args=CACHE_VARIANTS[variant])
    worlds = [World(native), World(mount.mountpoint)]
    fuzzer = Fuzzer(seed)
    try:
        for index in range(3000):
            description, action = fuzzer.operation()
            outcomes = [_outcome(functools.partial(action, world)) for world in worlds]
            assert outcomes[0] == outcomes[1], f"seed {seed}, op {index}: {description}: native/mount {outcomes}"
    finally:
        for world in worlds:
            world.close_all()
    assert snapshot(native) == snapshot(mount.mountpoint)
    if variant == "fake-backend":
        assert list(mount.backing.iterdir()) == [], "the fake backend wrote to the backing directory"
    else:
        assert snapshot(native) == snapshot(mount.backing)


def test_fuzzer_is_deterministic_per_seed() -> None:
    def sequence(seed: int) -> list[str]:
        fuzzer = Fuzzer(seed)
        return [fuzzer.operation()[0] for _ in range(200)]

    assert sequence(7) == sequence(7)
    assert sequence(7) != sequence(8)
