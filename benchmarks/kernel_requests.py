"""The requests the kernel sends each FUSE connection, by operation, read from its own tracepoint.

A file system's own metrics count only what that file system serves, and only
the interposer has metrics: pyfuse3's example and the do-nothing file system
have none, and a bare mount has them off.  The kernel's ``fuse:fuse_request_send``
tracepoint (fs/fuse/fuse_trace.h, Linux 6.13 and later) fires once per request
on every connection, with the connection's device number and the opcode, so
every subject is counted the same way, by the sender.

The events go to a tracefs instance of their own (nothing else in the system's
tracing is touched), whose buffer is read between runs, never while one is
timed; a buffer that overflowed fails the count instead of under-reporting it.
An enabled tracepoint costs well under a microsecond per request, against the
tens of microseconds a FUSE request takes here, and every subject pays it.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from pathlib import Path
from types import TracebackType

TRACEFS = Path("/sys/kernel/tracing")
EVENT = "events/fuse/fuse_request_send"
BUFFER_KIB_PER_CPU = 65536
"""Room for about a million events per CPU between two reads: a 5 s run at 100,000 requests a second fits."""
LINE = re.compile(rb"fuse_request_send: connection (\d+) req \d+ opcode \d+ \((\w+)\)")


def connection_of(mountpoint: Path) -> int:
    """The number the tracepoint names a mount's connection by: its superblock's device, as the kernel encodes
    it (major << 20 | minor), which ``stat`` encodes differently."""
    device = os.stat(mountpoint).st_dev
    return os.major(device) << 20 | os.minor(device)


class KernelRequests:
    """A tracefs instance recording every FUSE request while the ``with`` block runs; ``count`` reads it."""

    def __init__(self) -> None:
        self.instance = TRACEFS / "instances" / f"cnfs-interposer-bench-{os.getpid()}"
        self._mounted_tracefs = False
        self._totals: dict[int, Counter[str]] = {}

    def __enter__(self) -> KernelRequests:
        if not (TRACEFS / "instances").is_dir():
            subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=True)
            self._mounted_tracefs = True
        if not (TRACEFS / EVENT).is_dir():
            raise RuntimeError(f"this kernel has no {TRACEFS / EVENT} (Linux 6.13 or later has it)")
        self.instance.mkdir()
        (self.instance / "buffer_size_kb").write_text(str(BUFFER_KIB_PER_CPU))
        (self.instance / EVENT / "enable").write_text("1")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        (self.instance / EVENT / "enable").write_text("0")
        self.instance.rmdir()
        if self._mounted_tracefs:
            subprocess.run(["umount", str(TRACEFS)], check=True)

    def count(self, connection: int) -> Counter[str]:
        """Requests sent to ``connection`` so far, by operation (``lookup``, ``write``, ``batch_forget``…)."""
        self._read()
        return Counter(self._totals.get(connection, {}))

    def _read(self) -> None:
        """Move what the buffer holds into the totals, and empty it."""
        lost = sum(_overruns(stats.read_text()) for stats in (self.instance / "per_cpu").glob("cpu*/stats"))
        if lost:
            raise RuntimeError(f"the trace buffer lost {lost} FUSE requests: read it more often or enlarge it")
        for connection, opcode in LINE.findall(_drain(self.instance / "trace_pipe")):
            operation = opcode.decode().removeprefix("FUSE_").lower()
            self._totals.setdefault(int(connection), Counter())[operation] += 1


def _drain(pipe: Path) -> bytes:
    """Everything the buffer holds, consumed as it is read (no event is read twice or lost between reads)."""
    chunks = []
    descriptor = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                chunk = os.read(descriptor, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(descriptor)
    return b"".join(chunks)


def _overruns(stats: str) -> int:
    for line in stats.splitlines():
        name, _, value = line.partition(":")
        if name == "overrun":
            return int(value)
    return 0
