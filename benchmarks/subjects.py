"""What a benchmark runs on: a directory, natively or through a file system served by a process of its own.

Shared by ``python -m benchmarks``, ``benchmarks.real`` and ``benchmarks.targets``, so that all measure a server
the same way: its CPU time per run (its children included: a mount's span export process), read once it is idle
again, and the requests it served by operation, counted by the mount's own metrics or by the kernel
(``benchmarks.kernel_requests``), which counts every subject alike.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from interposer.local.demo import scrape
from interposer.mount.child import MountProcess

from .kernel_requests import KernelRequests, connection_of
from .overhead import BASELINE, VARIANTS, cpu_ticks, wait_until_idle
from .workloads import Target

NATIVE, EXAMPLE, DO_NOTHING = "native", "example", "do_nothing"
"""The subjects that are not the interposer: the directory itself and the references (benchmarks/references.py)."""
XATTRS_OFF, DEFAULT, SAMPLED = "bare-xattrs-off", "default", "default-1%"
MOUNT_CONFIGS = {
    BASELINE: VARIANTS[BASELINE],
    XATTRS_OFF: VARIANTS[BASELINE] + "fuse:\n  xattrs: false\n",
    DEFAULT: "tracing:\n  file: {work}/spans.jsonl\n",
    SAMPLED: "tracing:\n  file: {work}/spans.jsonl\n  sample_ratio: 0.01\n",
}
"""The interposer's configurations benchmarked side by side: no telemetry; the same with ``fuse.xattrs: false``
(no security.capability probe before each write); the defaults (metrics, spans at 100%); the defaults with 1% of
the spans kept.  The span files stay in the benchmark's scratch directory."""


@dataclass(frozen=True)
class Subject:
    """A directory to run in (``target``), served by process ``server`` unless native; ``counted`` gives the
    requests served so far by operation, where they can be counted."""

    name: str
    target: Target
    server: int | None = None
    counted: Callable[[], Counter[str]] | None = None

    def settle(self) -> None:
        """Let the server finish what the last run left it (span export, forgets), so it slows no other subject and
        its CPU time is all counted."""
        if self.server is not None:
            wait_until_idle(self.server)

    def server_seconds(self) -> float:
        """CPU time the server (and its children) has used so far; 0 natively."""
        return 0.0 if self.server is None else cpu_ticks(self.server) / os.sysconf("SC_CLK_TCK")

    def requests(self) -> Counter[str]:
        """Requests served so far, by operation; empty where nothing counts them."""
        return Counter() if self.counted is None else self.counted()


def scraped(url: str | None) -> Callable[[], Counter[str]] | None:
    """Requests by operation as the mount's own metrics endpoint at ``url`` counts them; None without one."""
    if url is None:
        return None
    return lambda: Counter(scrape(url).requests)


def counted_by_kernel(kernel: KernelRequests, mountpoint: Path) -> Callable[[], Counter[str]]:
    """Requests by operation as the kernel sent them to the file system mounted at ``mountpoint``."""
    return partial(kernel.count, connection_of(mountpoint))


def interposer_subject(name: str, work: Path, stack: ExitStack, kernel: KernelRequests | None = None) -> Subject:
    """A mount with ``MOUNT_CONFIGS[name]`` over ``work/backing``, unmounted when ``stack`` closes; its requests
    counted by ``kernel`` if given, else by its own metrics where it has them."""
    (work / "backing").mkdir(parents=True)
    (work / "mnt").mkdir()
    (work / "config.yaml").write_text(MOUNT_CONFIGS[name].format(work=work))
    log = stack.enter_context((work / "log").open("wb"))
    mount = stack.enter_context(
        MountProcess(work / "backing", work / "mnt", ["--config", str(work / "config.yaml")], log=log)
    )
    assert mount.process is not None
    url = (mount.status().get("metrics") or {}).get("exporters", {}).get("prometheus")
    counted = scraped(url) if kernel is None else counted_by_kernel(kernel, mount.mountpoint)
    return Subject(name, Target(mount.mountpoint, mount.backing), mount.process.pid, counted)
