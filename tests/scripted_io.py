"""A workload whose FUSE requests are known in advance, for checking metrics and spans to the unit.

It runs on a mount with ``direct_io`` (each read(2)/write(2) is exactly one
FUSE request) and the marking layer (a path containing 'flaky' fails with an
injected EIO; one containing 'slow' reports a throttle wait).  Requests the
kernel adds on its own (lookups, getattrs, getxattrs for security.capability)
are not predicted, so ``operations`` lists only the ones the workload decides.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MOUNT_CONFIG = "extra_layers: ['tests.layers.marking:MarkingLayer']\ncache:\n  direct_io: true\n"

FILES = 4
CHUNKS = 3
CHUNK = 10_000
FAILED_RMDIRS = 3
FAILED_REMOVEXATTRS = 4
FLAKY_STATS = 2


@dataclass
class Expected:
    """What the metrics must say after ``run``."""

    operations: dict[str, int] = field(default_factory=dict)
    """Successful requests per operation name, for the operations the workload decides."""
    errors: dict[tuple[str, str], int] = field(default_factory=dict)
    """(operation, errno symbol) -> failed requests."""
    faults: dict[tuple[str, str], int] = field(default_factory=dict)
    """(fault type, operation) -> injected faults."""
    bytes_read: int = 0
    bytes_written: int = 0
    directories_net_created: int = 0


def _expect_failure(call: Callable[[], object], code: int) -> None:
    with pytest.raises(OSError) as failure:
        call()
    assert failure.value.errno == code, f"expected {errno.errorcode[code]}, got {failure.value}"


def run(root: Path, while_open: Callable[[], None]) -> Expected:
    """Do the scripted I/O in ``root``; call ``while_open`` while one file and one directory handle are open."""
    data = root / "data"
    data.mkdir()
    for index in range(FILES):
        fd = os.open(data / f"f{index}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        for _ in range(CHUNKS):
            assert os.write(fd, bytes([index]) * CHUNK) == CHUNK
        os.fsync(fd)
        os.close(fd)
    for index in range(FILES):
        fd = os.open(data / f"f{index}", os.O_RDONLY)
        for _ in range(CHUNKS - 1):
            assert os.read(fd, CHUNK) == bytes([index]) * CHUNK
        assert os.read(fd, 2 * CHUNK) == bytes([index]) * CHUNK  # short: the metric counts what moved
        os.close(fd)
    for name in "abcde":
        (root / name).mkdir()
    (root / "d").rmdir()
    (root / "e").rmdir()
    for _ in range(FAILED_RMDIRS):
        _expect_failure(data.rmdir, errno.ENOTEMPTY)
    for _ in range(FAILED_REMOVEXATTRS):
        _expect_failure(lambda: os.removexattr(data / "f0", "user.absent"), errno.ENODATA)
    os.rename(data / "f3", data / "g3")
    os.unlink(data / "g3")
    for _ in range(FLAKY_STATS):
        _expect_failure(lambda: os.stat(root / "flaky"), errno.EIO)
    (root / "slow").write_bytes(b"")
    file_fd = os.open(data / "f0", os.O_RDONLY)
    directory_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while_open()
    finally:
        os.close(file_fd)
        os.close(directory_fd)
    closes = 2 * FILES + 1
    return Expected(
        operations={
            "create": FILES + 1,  # and the 'slow' file
            "write": FILES * CHUNKS,
            "fsync": FILES,
            "open": FILES + 1,
            "read": FILES * CHUNKS,
            "flush": closes + 1,  # the 'slow' file's close too
            "release": closes + 1,
            "opendir": 1,
            "releasedir": 1,
            "mkdir": 6,
            "rmdir": 2,
            "rename": 1,
            "unlink": 1,
        },
        errors={
            ("rmdir", "ENOTEMPTY"): FAILED_RMDIRS,
            ("removexattr", "ENODATA"): FAILED_REMOVEXATTRS,
            ("lookup", "EIO"): FLAKY_STATS,
        },
        faults={("errno", "lookup"): FLAKY_STATS},
        bytes_read=FILES * CHUNKS * CHUNK,
        bytes_written=FILES * CHUNKS * CHUNK,
        directories_net_created=4,
    )
