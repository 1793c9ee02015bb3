"""Where a volume's server runs: somewhere whose lifetime is not the node plugin's.

A launcher starts a server, tells whether it still runs, and stops it.  What
identifies a server is written into the publication's record, so a restarted
plugin (or a new version of it) finds the servers its predecessor started.
``LocalLauncher`` runs each server as a detached process in a cgroup of its own,
a sibling of the plugin's; ``kubernetes.PodLauncher`` runs it in a pod.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..mount.control import runtime_path_for, socket_path_for
from ..procfs import running_start_time
from .state import Publication

SERVER_COMMAND = "volume-server"
"""The ``interposer`` subcommand that runs one volume's server (the image's entrypoint is ``interposer``)."""
WITHOUT_SYS_ADMIN = ("setpriv", "--bounding-set=-sys_admin")
"""util-linux's setpriv: the server gets every capability but CAP_SYS_ADMIN, which it never needs (it is
handed a mounted descriptor), and nothing it runs can get it back."""


@dataclass(frozen=True)
class ServerSpec:
    """What one volume's server is started with."""

    key: str
    """A short name for the volume's publication, unique on the node."""
    backing: Path
    target: Path
    config: Path
    log: Path
    handover: Path
    environment: dict[str, str] = field(default_factory=dict)


class Launcher(Protocol):
    poll_interval: float
    """Seconds between looks at a server that is starting or stopping."""

    def sockets(self, target: Path, key: str) -> tuple[Path, Path]:
        """The handover and control sockets of a volume's server, reachable from both sides."""

    def launch(self, spec: ServerSpec, publication: Publication) -> Publication:
        """Start the server; return the publication with the server's identity filled in."""

    def gone(self, publication: Publication) -> str | None:
        """Why the publication's server no longer runs, or None while it does."""

    def stop(self, publication: Publication, timeout: float) -> None:
        """Stop the server and wait until it is gone."""


def server_arguments(spec: ServerSpec, cgroup: Path | None) -> list[str]:
    """The arguments of ``interposer volume-server`` for one volume."""
    arguments = [SERVER_COMMAND, str(spec.backing), "--mountpoint", str(spec.target)]
    arguments += ["--handover", str(spec.handover), "--config", str(spec.config)]
    return arguments + ([] if cgroup is None else ["--cgroup", str(cgroup)])


class LocalLauncher:
    """Servers as detached processes (their own session, no CAP_SYS_ADMIN), each in ``<cgroup_root>/<key>``.

    A container is a cgroup: with ``cgroup_root`` outside the plugin's cgroup,
    killing the plugin's whole cgroup leaves the servers running.  The server
    moves itself into its cgroup before it starts its own child processes.
    """

    poll_interval = 0.02

    def __init__(self, cgroup_root: Path | None) -> None:
        self.cgroup_root = cgroup_root
        self.children: dict[int, subprocess.Popen[bytes]] = {}

    def sockets(self, target: Path, key: str) -> tuple[Path, Path]:
        return runtime_path_for(target, ".handover.sock"), socket_path_for(target)

    def launch(self, spec: ServerSpec, publication: Publication) -> Publication:
        cgroup = None if self.cgroup_root is None else self.cgroup_root / spec.key
        with spec.log.open("ab") as log:
            process = subprocess.Popen(
                [*WITHOUT_SYS_ADMIN, sys.executable, "-m", "interposer", *server_arguments(spec, cgroup)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **spec.environment},
            )
        self.children[process.pid] = process
        return publication.model_copy(
            update={"pid": process.pid, "start_time": running_start_time(process.pid), "cgroup": cgroup and str(cgroup)}
        )

    def gone(self, publication: Publication) -> str | None:
        self._reap()
        pid = publication.pid
        if pid is not None and running_start_time(pid) == publication.start_time:
            return None
        return f"the server process (pid {pid}) is gone"

    def stop(self, publication: Publication, timeout: float) -> None:
        """SIGTERM, then the whole cgroup (the server's span export process included) is killed."""
        if self.gone(publication) is None:
            assert publication.pid is not None
            os.kill(publication.pid, signal.SIGTERM)
            if not self._wait_gone(publication, timeout):
                self._kill(publication)
                self._wait_gone(publication, timeout)
        if publication.cgroup is not None:
            self._remove_cgroup(Path(publication.cgroup), timeout)

    def _kill(self, publication: Publication) -> None:
        if publication.cgroup is not None and Path(publication.cgroup, "cgroup.kill").exists():
            Path(publication.cgroup, "cgroup.kill").write_text("1\n")
        elif publication.pid is not None:
            os.kill(publication.pid, signal.SIGKILL)

    def _remove_cgroup(self, cgroup: Path, timeout: float) -> None:
        """A cgroup can be removed once empty; the server's own children leave with it."""
        if not cgroup.exists():
            return
        (cgroup / "cgroup.kill").write_text("1\n")
        deadline = time.monotonic() + timeout
        while True:
            try:
                cgroup.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                self._reap()
                time.sleep(self.poll_interval)

    def _wait_gone(self, publication: Publication, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.gone(publication) is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(self.poll_interval)
        return True

    def _reap(self) -> None:
        """Collect exited children so they do not linger as zombies (adopted servers are init's to reap)."""
        for pid, child in list(self.children.items()):
            if child.poll() is not None:
                del self.children[pid]
