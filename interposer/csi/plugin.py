"""Which launcher the node plugin's supervisor uses: pods in Kubernetes, detached processes elsewhere."""

from __future__ import annotations

from pathlib import Path

from .launcher import Launcher, LocalLauncher
from .supervisor import Supervisor


def supervisor_for(
    node: str,
    state_dir: Path,
    server_cgroup: Path | None,
    server_pods: Path | None,
    ready_timeout: float,
    probe_timeout: float,
) -> Supervisor:
    """The supervisor of the volumes' servers; raises ValueError on a bad --server-pods file."""
    launcher: Launcher
    if server_pods is not None and server_cgroup is not None:
        raise ValueError("--server-cgroup and --server-pods: allowed: one of them (local processes or pods)")
    if server_pods is not None:
        from .pods import PodLauncher, PodSettings

        launcher = PodLauncher(PodSettings.load(server_pods), node, state_dir)
    else:
        launcher = LocalLauncher(server_cgroup)
    return Supervisor(state_dir / "interposers", launcher, ready_timeout, probe_timeout)
