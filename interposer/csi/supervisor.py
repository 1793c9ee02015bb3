"""One interposer process per published volume: started, watched, stopped.

Each volume's interposer runs as a child process (a FUSE server must never
share a process with the gRPC server that kubelet waits on).  A process is
known by its pid *and* start time, so after a plugin restart the driver can
tell its own live interposers from dead ones whose pid was reused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..mount.child import MountProcess
from ..mount.table import is_stale, mount_at, unmount
from .state import Publication, key_of

FUSE_TYPE = "fuse.interposer"


@dataclass(frozen=True)
class Condition:
    """NodeGetVolumeStats' volume condition."""

    abnormal: bool
    message: str


def start_time_of(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), or None for a gone or zombie process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


class Supervisor:
    """Starts and stops the interposer processes; their config and log files live in ``directory``."""

    def __init__(self, directory: Path, ready_timeout: float, stop_timeout: float = 20.0) -> None:
        self.directory = directory
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def files(self, target: str) -> tuple[Path, Path, Path]:
        """A publication's config file, log file and span file (the fallback when no collector is set)."""
        key = key_of(target)
        return self.directory / f"{key}.yaml", self.directory / f"{key}.log", self.directory / f"{key}.spans.jsonl"

    def start(self, publication: Publication, config: dict[str, Any], environment: dict[str, str]) -> Publication:
        """Start the interposer and return once its mount is ready; raises RuntimeError or TimeoutError."""
        config_path, log_path, _ = self.files(publication.target_path)
        config_path.write_text(yaml.safe_dump(config, sort_keys=True))
        with log_path.open("ab") as log:
            process = MountProcess(
                Path(publication.backing),
                Path(publication.target_path),
                ["--config", str(config_path), "--force"],
                log=log,
                ready_timeout=self.ready_timeout,
                env=environment,
            )
            try:
                process.start()
            except (RuntimeError, TimeoutError) as exc:
                raise type(exc)(f"{exc}: {self.log_tail(publication.target_path)}") from None
        assert process.process is not None
        pid = process.process.pid
        self.children[pid] = process.process
        return publication.model_copy(update={"pid": pid, "start_time": start_time_of(pid)})

    def alive(self, publication: Publication) -> bool:
        self._reap()
        pid = publication.pid
        return pid is not None and start_time_of(pid) == publication.start_time

    def condition(self, publication: Publication) -> Condition:
        """Normal only when the process lives and its mount answers."""
        if not self.alive(publication):
            return Condition(
                True,
                f"the interposer process (pid {publication.pid}) is gone; last log line: "
                f"{self.log_tail(publication.target_path)}",
            )
        if is_stale(publication.target_path):
            return Condition(True, "the mount does not answer (Transport endpoint is not connected)")
        entry = mount_at(publication.target_path)
        if entry is None or entry.fstype != FUSE_TYPE:
            return Condition(True, f"nothing is mounted at {publication.target_path}")
        return Condition(False, f"interposer pid {publication.pid} serving {publication.backing}")

    def stop(self, publication: Publication) -> None:
        """Stop the process (it unmounts itself); a hung one is killed and its mount detached."""
        if self.alive(publication):
            assert publication.pid is not None
            os.kill(publication.pid, signal.SIGTERM)
            if not self._wait_gone(publication, self.stop_timeout):
                os.kill(publication.pid, signal.SIGKILL)
                self._wait_gone(publication, self.stop_timeout)
        target = publication.target_path
        if is_stale(target) or mount_at(target) is not None:
            unmount(target, lazy=True)

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

    def _wait_gone(self, publication: Publication, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive(publication):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _reap(self) -> None:
        """Collect exited children so they do not linger as zombies."""
        for pid, child in list(self.children.items()):
            if child.poll() is not None:
                del self.children[pid]
