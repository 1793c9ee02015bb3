"""The benchmark workloads: fio jobs for data, a Python script for metadata.

Each workload runs against a directory and returns one figure, higher is
better (bytes/s or operations/s), so that mount/native is a ratio of speeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Sizes and durations; ``quick`` ones keep a smoke test short."""

    runtime: int = 5
    file_size_mb: int = 512
    files: int = 10_000

    @classmethod
    def quick(cls) -> Settings:
        return cls(runtime=1, file_size_mb=16, files=300)


@dataclass(frozen=True)
class Target:
    """Where a workload runs (``path``) and the same directory without the interposer (``direct``)."""

    path: Path
    direct: Path

    @property
    def is_mount(self) -> bool:
        return self.path != self.direct


Run = Callable[[Target, Settings], float]


@dataclass(frozen=True)
class Workload:
    """A named workload; short, noisy ones are repeated and their median kept."""

    name: str
    unit: str
    run: Run
    repeats: int = 1
    floor: float | None = None
    """The ratio to native the mount must keep (the issue's floor: about half of libfuse's passthrough_ll)."""


def _fio(directory: Path, *args: str) -> dict[str, float]:
    command = [
        "fio",
        "--output-format=json",
        f"--directory={directory}",
        "--ioengine=psync",
        "--group_reporting",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    job = json.loads(result.stdout)["jobs"][0]
    return {
        "read_bps": float(job["read"]["bw_bytes"]),
        "write_bps": float(job["write"]["bw_bytes"]),
        "read_iops": float(job["read"]["iops"]),
        "write_iops": float(job["write"]["iops"]),
    }


def _data_file(target: Target, settings: Settings) -> str:
    """A file for the read jobs, written once (directly) and left in the page cache."""
    name = "fio-data"
    path = target.direct / name
    size = settings.file_size_mb * 1024 * 1024
    if not path.exists() or path.stat().st_size != size:
        block = os.urandom(1024 * 1024)
        with path.open("wb") as handle:
            for _ in range(settings.file_size_mb):
                handle.write(block)
    path.read_bytes()  # warm the page cache: "the backing file cached"
    return name


def _fio_job(
    rw: str, block: str, figure: str, *, reads_cached_file: bool, jobs: int = 1, max_mb: int = 0, direct: bool = False
) -> Run:
    """A time-based fio job; read jobs use a file kept in the page cache, write jobs a scratch file.  ``direct``:
    O_DIRECT, so every call is a request whatever the kernel caches (the mount's own cost, per request)."""

    def run(target: Target, settings: Settings) -> float:
        size_mb = min(settings.file_size_mb, max_mb) if max_mb else settings.file_size_mb
        if reads_cached_file:
            filename = _data_file(target, settings)
            extra = f"--invalidate={int(target.is_mount)}"
        else:
            filename, extra = f"fio-{rw}", "--unlink=1"
        figures = _fio(
            target.path,
            f"--name={rw}-{jobs}",
            f"--rw={rw}",
            f"--bs={block}",
            f"--filename={filename}",
            f"--size={size_mb}M",
            f"--numjobs={jobs}",
            "--norandommap",
            "--randrepeat=0",
            "--time_based",
            f"--runtime={settings.runtime}",
            f"--direct={int(direct)}",
            extra,
        )
        return figures[figure]

    return run


def _timed(count: int, body: Callable[[], None]) -> float:
    started = time.perf_counter()
    body()
    return count / (time.perf_counter() - started)


def create_stat_unlink(target: Target, settings: Settings) -> float:
    """Per file: create (open O_CREAT + close), stat, unlink; files per second."""
    work = target.path / "csu"
    work.mkdir(exist_ok=True)
    paths = [str(work / f"f{index}") for index in range(settings.files)]

    def body() -> None:
        for path in paths:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
            os.stat(path)
            os.unlink(path)

    return _timed(settings.files, body)


def _populated(target: Target, name: str, files: int) -> Path:
    """A directory of ``files`` empty files, made directly (so the mount has cached none of them)."""
    work = target.direct / name
    if not work.is_dir() or len(os.listdir(work)) != files:
        work.mkdir(exist_ok=True)
        for index in range(files):
            (work / f"file-{index:06d}").touch()
    return target.path / name


def stat_files(target: Target, settings: Settings) -> float:
    """stat of every file in a 10k-file directory, the first time it is seen (nothing cached)."""
    work = _populated(target, f"stat-{time.monotonic_ns()}", settings.files)
    paths = [str(work / f"file-{index:06d}") for index in range(settings.files)]

    def body() -> None:
        for path in paths:
            os.stat(path)

    return _timed(settings.files, body)


def list_directory(target: Target, settings: Settings) -> float:
    """``ls -l`` of a 10k-entry directory: names and attributes; entries per second."""
    work = _populated(target, "listing", settings.files)

    def body() -> None:
        for entry in os.scandir(work):
            entry.stat(follow_symlinks=False)

    return _timed(settings.files, body)


WORKLOADS = [
    Workload("seq-write-1M", "B/s", _fio_job("write", "1M", "write_bps", reads_cached_file=False), 3, 0.25),
    Workload("seq-read-1M", "B/s", _fio_job("read", "1M", "read_bps", reads_cached_file=True), 3),
    Workload("rand-read-4K-1job", "IOPS", _fio_job("randread", "4k", "read_iops", reads_cached_file=True), 1, 0.026),
    Workload("rand-read-4K-2jobs", "IOPS", _fio_job("randread", "4k", "read_iops", reads_cached_file=True, jobs=2)),
    Workload(
        "rand-read-4K-direct-2jobs",
        "IOPS",
        _fio_job("randread", "4k", "read_iops", reads_cached_file=True, jobs=2, direct=True),
    ),
    Workload("rand-write-4K", "IOPS", _fio_job("randwrite", "4k", "write_iops", reads_cached_file=False, max_mb=256)),
    Workload("create-stat-unlink", "files/s", create_stat_unlink, repeats=5, floor=0.25),
    Workload("stat", "files/s", stat_files, repeats=5, floor=0.03),
    Workload("listing", "entries/s", list_directory, repeats=5, floor=0.2),
]

DO_NOTHING_WORKLOADS = frozenset({"stat"})
"""The workloads the do-nothing file system (benchmarks/floor.py) can serve: it answers lookups and nothing else."""
