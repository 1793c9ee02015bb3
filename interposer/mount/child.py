"""Running a mount as a child process and knowing when it is ready.

The demo, the tests, the benchmarks and (later) the CSI driver all start
``interposer mount`` as a separate process: a FUSE server must never be a
client of its own mount.  Readiness is polled with a deadline, never slept.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .control import request, socket_path_for
from .table import is_stale, mount_at, unmount


class MountProcess:
    """``interposer mount BACKING MOUNTPOINT ...`` in a child process, as a context manager."""

    def __init__(
        self,
        backing: Path,
        mountpoint: Path,
        args: Sequence[str] = (),
        *,
        log: IO[Any] | int | None = None,
        ready_timeout: float = 20.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.backing = backing
        self.mountpoint = mountpoint.absolute()
        self.args = list(args)
        self.log = log
        self.ready_timeout = ready_timeout
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def control_socket(self) -> Path:
        return socket_path_for(self.mountpoint)

    def start(self) -> MountProcess:
        command = [sys.executable, "-m", "interposer", "mount", str(self.backing), str(self.mountpoint), *self.args]
        env = None if self.env is None else {**os.environ, **self.env}
        self.process = subprocess.Popen(command, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL, env=env)
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Poll until the mount is in the mount table and its control socket answers."""
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"interposer exited with {self.process.returncode} before the mount was ready")
            entry = mount_at(self.mountpoint)
            if entry is not None and entry.fstype == "fuse.interposer" and self.control_socket.exists():
                try:
                    request(self.control_socket, {"command": "status"}, timeout=2)
                    return
                except OSError:
                    pass
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"mount at {self.mountpoint} not ready after {self.ready_timeout}s")

    def status(self) -> dict[str, Any]:
        return request(self.control_socket, {"command": "status"})

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the mount to stop and wait for it; a process that hangs is killed and its mount detached."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if mount_at(self.mountpoint) is not None or is_stale(self.mountpoint):
            unmount(self.mountpoint, lazy=True)
        return self.process.returncode

    def __enter__(self) -> MountProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
