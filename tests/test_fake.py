"""The fake backend: a workload runs unchanged, and nothing reaches the disk.

(The differential fuzzer in test_fuzz.py also runs against it: every errno
and the final tree match a native directory.)
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from interposer.local.demo import run_workload
from interposer.mount.child import MountProcess

from .conftest import MountFactory, interposer


def fake_mount(mount_factory: MountFactory, scratch: Path, fake: str) -> MountProcess:
    config = scratch / "fake.yaml"
    config.write_text(f"backend:\n  kind: fake\n  fake: {fake}\n")
    return mount_factory(args=["--config", str(config)])


def test_a_workload_runs_unchanged_and_nothing_reaches_the_disk(mount_factory: MountFactory, scratch: Path) -> None:
    mount = fake_mount(mount_factory, scratch, "{data: keep}")
    report = run_workload(mount.mountpoint)
    assert report.checksums_ok == report.files_written == 50
    assert report.expected_errors == {"ENOENT": 1}
    assert sorted(os.listdir(mount.mountpoint / "archive"))[:2] == ["r00-app-00.keep", "r00-app-00.log"]
    status = mount.status()
    assert status["backend"] == "fake"
    kept = [*(mount.mountpoint / "archive").glob("*.log"), *(mount.mountpoint / "reports").iterdir()]
    assert status["fake_kept_bytes"] == sum(p.stat().st_size for p in kept)
    assert list(mount.backing.iterdir()) == []


@pytest.mark.parametrize("read", ["zeros", "pattern"])
def test_discarded_data_reads_back_as_zeros_or_a_pattern(mount_factory: MountFactory, scratch: Path, read: str) -> None:
    mount = fake_mount(mount_factory, scratch, f"{{data: discard, read: {read}}}")
    path = mount.mountpoint / "big"
    size = 64 << 20
    with path.open("wb") as handle:
        for _ in range(size >> 20):
            handle.write(os.urandom(1 << 20))
    assert path.stat().st_size == size

    def expected(start: int, count: int) -> bytes:
        return bytes(offset % 256 for offset in range(start, start + count)) if read == "pattern" else bytes(count)

    with path.open("rb") as reader:
        assert reader.read(1000) == expected(0, 1000)
        reader.seek(size - 10)
        assert reader.read(100) == expected(size - 10, 10)
    assert mount.status()["fake_kept_bytes"] == 0
    assert list(mount.backing.iterdir()) == []


def test_kept_data_is_capped_like_a_full_disk(mount_factory: MountFactory, scratch: Path) -> None:
    mount = fake_mount(mount_factory, scratch, "{data: keep, memory_cap: 2097152}")
    fd = os.open(mount.mountpoint / "fill", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        assert os.write(fd, bytes(1 << 20)) == 1 << 20
        assert os.write(fd, bytes(1 << 20)) == 1 << 20
        with pytest.raises(OSError) as full:
            os.write(fd, bytes(1 << 20))
    finally:
        os.close(fd)
    assert full.value.errno == errno.ENOSPC
    usage = os.statvfs(mount.mountpoint)
    assert usage.f_blocks * usage.f_frsize == 2 << 20
    os.unlink(mount.mountpoint / "fill")
    assert mount.status()["fake_kept_bytes"] == 0


def test_the_crash_journal_needs_the_passthrough_backend(scratch: Path) -> None:
    (scratch / "config.yaml").write_text("backend: {kind: fake}\ncrash: {enabled: true}\n")
    result = interposer("mount", str(scratch), str(scratch), "--config", str(scratch / "config.yaml"))
    assert result.returncode == 2
    assert "crash.enabled needs backend.kind: passthrough" in result.stderr
