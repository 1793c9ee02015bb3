"""An idle mount uses no CPU: once its last activity span has ended, none of its threads runs, in the mount's
process or its span export process, until a request comes; and the first request after the quiet is served,
traced, exported and counted as before.

Counted with the scheduler's own figures (``/proc/PID/task/TID/schedstat``: the times each thread was scheduled
in), which a loaded machine does not change: a thread that sleeps until an event is never scheduled in while
nothing happens, where one that wakes on a timer is, however briefly it runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks.overhead import thread_runs
from benchmarks.targets import IDLE_SETTLE
from interposer.local.demo import scrape
from interposer.local.traces import load_spans
from interposer.mount.child import MountProcess

from .conftest import MountFactory, wait_for

QUIET_WINDOW = 2.0
"""Seconds in which no thread of the mount may run at all."""


def runs_in_a_quiet_window(pid: int) -> dict[int, tuple[int, int]]:
    """The threads that ran during one window, with (ns on a CPU, times scheduled in) over it; new threads count."""
    before = thread_runs(pid)
    time.sleep(QUIET_WINDOW)  # the measurement itself: how often the mount runs unprompted in this much time
    after = thread_runs(pid)
    return {
        tid: (on_cpu - before.get(tid, (0, 0))[0], slices - before.get(tid, (0, 0))[1])
        for tid, (on_cpu, slices) in after.items()
        if (on_cpu, slices) != before.get(tid)
    }


def wait_until_quiet(mount: MountProcess) -> None:
    assert mount.process is not None
    deadline = time.monotonic() + IDLE_SETTLE + 10 * QUIET_WINDOW
    ran = runs_in_a_quiet_window(mount.process.pid)
    while ran:
        names = {tid: _thread_name(mount.process.pid, tid) for tid in ran}
        assert time.monotonic() < deadline, (
            f"the idle mount's threads kept running: (ns on a CPU, times run) per thread in each {QUIET_WINDOW} s: "
            + ", ".join(f"{names[tid]} {figures}" for tid, figures in ran.items())
        )
        ran = runs_in_a_quiet_window(mount.process.pid)


def _thread_name(pid: int, tid: int) -> str:
    for comm in Path("/proc").glob(f"*/task/{tid}/comm"):
        return f"{comm.read_text().strip()}[{tid}]"
    return f"[{tid}]"


def work(mnt: Path, name: str) -> None:
    (mnt / name).write_bytes(b"data")
    assert (mnt / name).read_bytes() == b"data"
    os.stat(mnt / name)
    os.listdir(mnt)


def test_an_idle_mount_does_not_run_and_wakes_for_the_next_request(mount_factory: MountFactory, scratch: Path) -> None:
    """The default configuration (metrics on a Prometheus endpoint, spans at 100% to a file): after requests and a
    scrape, a window in which no thread runs comes once the activity span has ended; then a request is served,
    its span reaches the file and the endpoint counts it."""
    spans = scratch / "spans.jsonl"
    config = scratch / "config.yaml"
    config.write_text(f"tracing:\n  file: {spans}\n")
    mount = mount_factory(args=["--config", str(config)])
    endpoint = mount.status()["metrics"]["exporters"]["prometheus"]
    work(mount.mountpoint, "before")
    scrape(endpoint)

    wait_until_quiet(mount)

    work(mount.mountpoint, "after")
    wait_for(
        lambda: any(span.attributes.get("file.path") == "/after" for span in load_spans(spans)),
        timeout=IDLE_SETTLE + 10,
        what="the span of the first request after the quiet to reach the span file",
    )
    assert scrape(endpoint).requests["write"] == 2, "both writes counted by the endpoint"
