"""Whether this process may spend otherwise idle CPU: more than one CPU, and no cgroup CPU cap.

The span export process polls for records while they flow (``export_process``).
That is free only on a CPU nobody else wants: at idle priority the scheduler
hands the CPU to any other task at once.  A cgroup CPU cap (``cpu.max``, as a
Kubernetes CPU limit sets) counts idle-priority time like any other, so polling
there would take quota from the mount itself; and with one CPU there is no
idle CPU to poll on.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _cpu_cgroups(membership: Path, cgroups: Path) -> list[tuple[Path, Path, str]]:
    """(hierarchy root, this process's directory in it, quota file) for cgroup v2 and a v1 ``cpu`` hierarchy."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0":
            root, quota = cgroups, "cpu.max"
        elif "cpu" in controllers.split(","):
            root, quota = cgroups / controllers, "cpu.cfs_quota_us"
        else:
            continue
        found.append((root, root / path.lstrip("/"), quota))
    return found


def _limited(quota_file: Path) -> bool:
    try:
        words = quota_file.read_text().split()
    except OSError:
        return False
    return bool(words) and words[0] not in ("max", "-1")


def cpu_capped(membership: Path = PROC_CGROUP, cgroups: Path = CGROUP_ROOT) -> bool:
    """True if this process's cgroup, or any above it, has a CPU quota (v2 ``cpu.max``, v1 CFS quota)."""
    for root, own, quota in _cpu_cgroups(membership, cgroups):
        if any(_limited(group / quota) for group in (own, *own.parents) if group.is_relative_to(root)):
            return True
    return False


def may_poll() -> bool:
    """Polling for records would only use CPU that is free to take."""
    return len(os.sched_getaffinity(0)) > 1 and not cpu_capped()
