"""``python -m benchmarks.floor``: the per-request floor of pyfuse3 on trio on this machine.

A file system that does nothing (every lookup answers a made-up entry: a
regular file for names starting with ``file-``, a directory otherwise, so the
stat workload's paths resolve) is mounted and timed on cold stats, one LOOKUP
request each, beside the native directory.  ``python -m benchmarks`` measures
it in the same run as the interposer (benchmarks/references.py).  No pyfuse3
file system can do better than this ratio, so it tells which benchmark floors
the framework allows at all.
"""

from __future__ import annotations

import itertools
import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

STATS = 20_000


def serve(mountpoint: str) -> None:
    """Run the do-nothing file system in this process until unmounted."""
    import pyfuse3
    import trio

    numbers = itertools.count(pyfuse3.ROOT_INODE + 1)

    class Nothing(pyfuse3.Operations):
        def _entry(self, ino: int, mode: int) -> pyfuse3.EntryAttributes:
            entry = pyfuse3.EntryAttributes()
            entry.st_ino = ino
            entry.st_mode = mode
            entry.entry_timeout = entry.attr_timeout = 1.0
            return entry

        async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
            return self._entry(inode, stat.S_IFDIR | 0o755)

        async def lookup(self, parent: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
            kind = stat.S_IFREG | 0o644 if name.startswith(b"file-") else stat.S_IFDIR | 0o755
            return self._entry(next(numbers), kind)

        async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
            return None

    pyfuse3.init(Nothing(), mountpoint, {"fsname=nothing"})
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close()


def cold_stats_per_second(directory: Path) -> float:
    """Timed as benchmarks.workloads.stat_files times it: paths made before the clock starts."""
    paths = [str(directory / f"file-{index}") for index in range(STATS)]
    started = time.perf_counter()
    for path in paths:
        os.stat(path)
    return STATS / (time.perf_counter() - started)


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="interposer-floor-", dir="/dev/shm"))
    native, mountpoint = base / "native", base / "mnt"
    native.mkdir()
    mountpoint.mkdir()
    for index in range(STATS):
        (native / f"file-{index}").touch()
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.floor", "--serve", str(mountpoint)])
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mountpoint):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the do-nothing file system did not mount")
            time.sleep(0.02)
        native_rate, floor_rate = cold_stats_per_second(native), cold_stats_per_second(mountpoint)
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
        server.wait(timeout=20)
        subprocess.run(["rm", "-rf", str(base)], check=False)
    print(f"cold stat, native:               {native_rate:>10,.0f}/s")
    print(f"cold stat, do-nothing pyfuse3 fs: {floor_rate:>10,.0f}/s  ({1e6 / floor_rate:.1f} us per LOOKUP)")
    print(f"best ratio any pyfuse3 file system can reach on stat: {floor_rate / native_rate:.3f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        main()
