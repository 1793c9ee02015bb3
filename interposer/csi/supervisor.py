"""One server per published volume: launched, mounted, handed its descriptor, watched, stopped.

Publishing is, in order: launch the server (it listens on its handover
socket), mount /dev/fuse at the target (``fusemount``), hand the descriptor
over (``handover``) and close the plugin's copy, then wait until the server's
control socket answers.  From then on the volume depends on the server alone;
the plugin only reads the record of it.  Every look at the mount goes through
``probe``, so a hung server costs the caller a bounded wait, never a blocked
thread of the gRPC server.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import load_config, merge
from ..mount.control import request
from ..mount.table import mount_at
from . import handover
from .fusemount import FSTYPE, FuseMountOptions, mount_fuse, unmount_fuse
from .launcher import Launcher, ServerSpec
from .probe import Prober
from .state import Publication, key_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Condition:
    """NodeGetVolumeStats' volume condition, and the target's statvfs when the mount answered."""

    abnormal: bool
    message: str
    stats: os.statvfs_result | None = None


class Supervisor:
    """Starts and stops the volumes' servers; their config and log files live in ``directory``."""

    def __init__(
        self, directory: Path, launcher: Launcher, ready_timeout: float, probe_timeout: float, stop_timeout: float = 20
    ) -> None:
        self.directory = directory
        self.launcher = launcher
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.prober = Prober(probe_timeout)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def files(self, target: str) -> tuple[Path, Path, Path]:
        """A publication's config file, log file and span file (the fallback when no collector is set)."""
        key = key_of(target)
        return self.directory / f"{key}.yaml", self.directory / f"{key}.log", self.directory / f"{key}.spans.jsonl"

    def start(self, publication: Publication, config: dict[str, Any], environment: dict[str, str]) -> Publication:
        """Launch, mount, hand over, wait until served; raises RuntimeError, TimeoutError or OSError, undone."""
        target = Path(publication.target_path)
        key = key_of(publication.target_path)
        handover_path, control_path = self.launcher.sockets(target, key)
        config = merge(config, {"control": {"socket": str(control_path)}})
        options = FuseMountOptions.of(load_config(None, config))
        config_path, log_path, _ = self.files(publication.target_path)
        config_path.write_text(yaml.safe_dump(config, sort_keys=True))
        handover_path.unlink(missing_ok=True)
        spec = ServerSpec(key, Path(publication.backing), target, config_path, log_path, handover_path, environment)
        launched = self.launcher.launch(spec, publication).model_copy(update={"lost": None})
        mounted = False
        try:
            deadline = time.monotonic() + self.ready_timeout
            self._wait(launched, deadline, handover_path.exists, "its handover socket")
            fd = mount_fuse(target, options)
            mounted = True
            try:
                handover.send(handover_path, fd, max(deadline - time.monotonic(), 0.1))
            finally:
                os.close(fd)
            self._wait(launched, deadline, lambda: _answers(control_path), "its control socket to answer")
        except (RuntimeError, TimeoutError, OSError) as exc:
            if mounted:
                unmount_fuse(target)
            self.launcher.stop(launched, self.stop_timeout)
            raise type(exc)(f"{exc}: {self.log_tail(publication.target_path)}") from None
        return launched

    def _wait(self, publication: Publication, deadline: float, ready: Callable[[], bool], what: str) -> None:
        while not ready():
            gone = self.launcher.gone(publication)
            if gone is not None:
                raise RuntimeError(f"{gone} before {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server of {publication.target_path} did not get {what} in time")
            time.sleep(self.launcher.poll_interval)

    def condition(self, publication: Publication) -> Condition:
        """Normal only when the server runs and its mount answers, within the probe timeout."""
        gone = self.launcher.gone(publication)
        if gone is not None:
            return Condition(True, f"{gone}; last log lines: {self.log_tail(publication.target_path)}")
        entry = mount_at(publication.target_path)
        if entry is None or entry.fstype != FSTYPE:
            return Condition(True, f"nothing is mounted at {publication.target_path}")
        result = self.prober.statvfs(publication.target_path)
        if result is None:
            return Condition(True, f"the mount does not answer within {self.prober.timeout}s (server hung)")
        if isinstance(result, OSError):
            if result.errno == errno.ENOTCONN:
                return Condition(True, "the mount does not answer (Transport endpoint is not connected)")
            return Condition(True, f"the mount fails: {result.strerror}")
        return Condition(False, f"server {_identity(publication)} serving {publication.backing}", result)

    def stop(self, publication: Publication) -> None:
        """Unmount (the server sees the end of its connection and exits), then stop whatever is left."""
        target = Path(publication.target_path)
        if mount_at(target) is not None:
            unmount_fuse(target)
        self.launcher.stop(publication, self.stop_timeout)

    def forget(self, target: str) -> None:
        """Drop a publication's files, the rotated span file included."""
        config_path, log_path, spans_path = self.files(target)
        for path in (config_path, log_path, spans_path, spans_path.with_name(spans_path.name + ".1")):
            path.unlink(missing_ok=True)

    def log_tail(self, target: str, lines: int = 3) -> str:
        try:
            text = self.files(target)[1].read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def _answers(control: Path) -> bool:
    try:
        request(control, {"command": "status"}, timeout=2)
    except OSError:
        return False
    return True


def _identity(publication: Publication) -> str:
    return f"pod {publication.pod}" if publication.pod else f"pid {publication.pid}"
