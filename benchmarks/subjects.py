"""What a benchmark runs on: a directory, natively or through a file system served by a process of its own.

Shared by ``python -m benchmarks`` and ``python -m benchmarks.real``, so that both measure a server the same way:
its CPU time per run (its children included: a mount's span export process), read once it is idle again, and the
requests it served by operation, from the mount's own metrics where it has them.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from interposer.local.demo import scrape

from .overhead import cpu_ticks, wait_until_idle
from .workloads import Target


@dataclass(frozen=True)
class Subject:
    """A directory to run in (``target``), served by process ``server`` unless native; ``metrics`` is the mount's
    scrape endpoint, if it has one."""

    name: str
    target: Target
    server: int | None = None
    metrics: str | None = None

    def settle(self) -> None:
        """Let the server finish what the last run left it (span export, forgets), so it slows no other subject and
        its CPU time is all counted."""
        if self.server is not None:
            wait_until_idle(self.server)

    def server_seconds(self) -> float:
        """CPU time the server (and its children) has used so far; 0 natively."""
        return 0.0 if self.server is None else cpu_ticks(self.server) / os.sysconf("SC_CLK_TCK")

    def requests(self) -> Counter[str]:
        """Requests served so far, by operation, from the mount's own metrics; empty without them."""
        return Counter() if self.metrics is None else Counter(scrape(self.metrics).requests)
