"""The reference file systems every benchmark run measures beside the interposer.

Ratios to native say how far the mount is from the kernel; ratios to these say
how far it is from what its own binding allows:

* ``floor``: the do-nothing pyfuse3 file system of ``benchmarks.floor``. No
  pyfuse3 file system can serve a request faster, so it bounds the per-request
  cost (it only answers lookups, so it runs the metadata workload ``stat``).
* ``example``: pyfuse3's own ``examples/passthroughfs.py``, taken from the
  pyfuse3 sdist on PyPI at the installed version, so that the reference is the
  binding's authors' code and not a copy of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from types import TracebackType

EXAMPLE_IN_SDIST = "examples/passthroughfs.py"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cnfs-interposer" / "benchmarks"
MOUNT_TIMEOUT = 20.0


def pyfuse3_example() -> Path:
    """``passthroughfs.py`` from the sdist of the installed pyfuse3, downloaded once and cached."""
    release = version("pyfuse3")
    script = CACHE / f"pyfuse3-{release}-passthroughfs.py"
    if script.exists():
        return script
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        # --no-binary for pyfuse3 alone: its build dependencies may still come as wheels.
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", "pyfuse3"]
        subprocess.run([*pip, "--dest", download, f"pyfuse3=={release}"], check=True)
        (sdist,) = Path(download).glob("pyfuse3-*.tar.gz")
        with tarfile.open(sdist) as archive:
            member = archive.getmember(f"pyfuse3-{release}/{EXAMPLE_IN_SDIST}")
            extracted = archive.extractfile(member)
            assert extracted is not None, member
            script.write_bytes(extracted.read())
    return script


class ReferenceMount:
    """A reference file system served by a child process, mounted until the ``with`` block ends."""

    def __init__(self, name: str, command: Sequence[str], mountpoint: Path, log: Path) -> None:
        self.name = name
        self.mountpoint = mountpoint
        self._command = list(command)
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id, for its CPU time."""
        assert self._process is not None, "not mounted"
        return self._process.pid

    def __enter__(self) -> ReferenceMount:
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(self._command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(self.mountpoint):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"the {self.name} reference did not mount; see {self._log}")
            time.sleep(0.02)  # polling the mount table, with a deadline
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if os.path.ismount(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=False)
        if self._process is not None:
            try:
                self._process.wait(timeout=MOUNT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def example_mount(backing: Path, mountpoint: Path, log: Path) -> ReferenceMount:
    """pyfuse3's passthrough example serving ``backing`` at ``mountpoint``."""
    return ReferenceMount(
        "pyfuse3 example", [sys.executable, str(pyfuse3_example()), str(backing), str(mountpoint)], mountpoint, log
    )


def floor_mount(mountpoint: Path, log: Path) -> ReferenceMount:
    """The do-nothing pyfuse3 file system at ``mountpoint``."""
    return ReferenceMount(
        "do-nothing floor", [sys.executable, "-m", "benchmarks.floor", "--serve", str(mountpoint)], mountpoint, log
    )
