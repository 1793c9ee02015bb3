"""The mount never dies, and nothing it holds leaks."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import MountFactory, require, wait_for


def test_exception_in_a_layer_is_eio_for_that_request_only(mount_factory: MountFactory, scratch: Path) -> None:
    config = scratch / "config.yaml"
    config.write_text("extra_layers: ['tests.layers.exploding:ExplodingLayer']\n")
    mount = mount_factory(args=["--config", str(config)], expect_clean=False)
    (mount.backing / "boom.txt").write_text("unreachable")
    (mount.backing / "fine.txt").write_text("reachable")
    for _ in range(3):
        with pytest.raises(OSError) as excinfo:
            os.stat(mount.mountpoint / "boom.txt")
        assert excinfo.value.errno == errno.EIO
    assert (mount.mountpoint / "fine.txt").read_text() == "reachable"
    (mount.mountpoint / "new.txt").write_text("still serving")
    assert (mount.backing / "new.txt").read_text() == "still serving"
    status = mount.status()
    assert status["internal_errors"] >= 3
    assert mount.process is not None
    assert mount.process.poll() is None
    assert mount.stop() == 0
    log = (scratch / "mount0.log").read_text()
    assert "ZeroDivisionError: a defect in a layer" in log
    assert "internal error in lookup on /boom.txt; answered EIO" in log


def test_inode_table_and_handles_shrink_back_after_drop_caches(mount_factory: MountFactory) -> None:
    require(os.access("/proc/sys/vm/drop_caches", os.W_OK), "writable /proc/sys/vm/drop_caches (root)")
    mount = mount_factory()
    mnt = mount.mountpoint
    for directory in range(20):
        (mnt / f"d{directory}").mkdir()
        for index in range(100):
            path = mnt / f"d{directory}" / f"f{index}"
            path.write_bytes(b"x" * index)
            os.link(path, mnt / f"d{directory}" / f"h{index}")
    for directory in range(0, 20, 2):
        os.rename(mnt / f"d{directory}", mnt / f"renamed{directory}")
    listed = sum(len(os.listdir(mnt / name)) for name in os.listdir(mnt))
    assert listed == 20 * 200
    grown = mount.status()["inodes"]
    assert grown > 2000
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    wait_for(lambda: mount.status()["inodes"] <= 2, timeout=30, what="the inode table to shrink after drop_caches")
    status = mount.status()
    assert status["open_files"] == 0
    assert status["open_dirs"] == 0
    assert len(os.listdir(f"/proc/{mount.process.pid}/fd")) < 30  # type: ignore[union-attr]


def test_objects_on_another_file_system_inside_the_backing_survive_descriptor_eviction(
    mount_factory: MountFactory, scratch: Path
) -> None:
    """A tmpfs mounted inside the backing tree: its objects get private inode numbers and, once their
    descriptors are evicted, are reopened by name (a file handle would be opened on the wrong file system)."""
    backing = scratch / "backing0"
    (backing / "inner").mkdir(parents=True)
    mounted_inner = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(backing / "inner")], capture_output=True, check=False
    )
    require(mounted_inner.returncode == 0, "permission to mount a tmpfs (root)")
    try:
        for index in range(40):
            (backing / "inner" / f"f{index}").write_text(f"inner {index}")
            (backing / f"g{index}").write_text(f"outer {index}")
        mount = mount_factory(backing, args=["--config", str(Path(__file__).parent / "configs" / "tiny-fd-pool.yaml")])
        mnt = mount.mountpoint
        for _ in range(3):
            for index in range(40):
                assert (mnt / "inner" / f"f{index}").read_text() == f"inner {index}"
                assert (mnt / f"g{index}").read_text() == f"outer {index}"
                os.utime(mnt / "inner" / f"f{index}")  # setattr reaches the object through its descriptor
        inner = os.stat(mnt / "inner" / "f0")
        assert inner.st_ino >= 1 << 63
        assert os.stat(mnt / "g0").st_ino == os.stat(backing / "g0").st_ino
        assert mount.status()["inode_fds"] <= 16
        mount.stop()
    finally:
        subprocess.run(["umount", "-l", str(backing / "inner")], check=False)
