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
    kubeconfig: Path | None,
) -> Supervisor:
    """The supervisor of the volumes' servers; raises ValueError on a bad --server-pods file, or on pods
    without a Kubernetes API (in-cluster credentials or ``kubeconfig``)."""
    launcher: Launcher
    if server_pods is not None and server_cgroup is not None:
        raise ValueError("--server-cgroup and --server-pods: allowed: one of them (local processes or pods)")
    if server_pods is not None:
        from .live_control import client_for
        from .pods import PodLauncher, PodSettings

        settings = PodSettings.load(server_pods)
        api_client = client_for(kubeconfig)
        if api_client is None:
            raise ValueError(
                "--server-pods: no Kubernetes API to create pods through (not in a cluster, no --kubeconfig)"
            )
        launcher = PodLauncher(settings, node, state_dir, api_client)
    else:
        launcher = LocalLauncher(server_cgroup)
    return Supervisor(state_dir / "interposers", launcher, ready_timeout, probe_timeout)
