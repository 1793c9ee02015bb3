"""Shared fixtures: real FUSE mounts in child processes, in directories every test user can reach."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from interposer.mount.child import MountProcess
from interposer.mount.control import runtime_path_for
from interposer.mount.kept_spans import STATE_DIR_VARIABLE
from interposer.mount.table import is_stale, mount_at, unmount

if TYPE_CHECKING:
    from .kube import ControlPlane


def interposer(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the command line as a user would; ``env`` adds variables to this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "interposer", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def require(condition: bool, what: str) -> None:
    """A missing component fails the test in CI (CI=true) and skips it elsewhere."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"required component missing in CI: {what}")
    pytest.skip(f"missing: {what}")


def require_command(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"command {name!r} on PATH")
    assert path is not None
    return path


def require_fuse() -> None:
    require(os.path.exists("/dev/fuse"), "/dev/fuse")
    require(os.geteuid() == 0, "root (mount tests run as root and drop to nobody where needed)")
    require_command("fusermount3")


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture(scope="session")
def world_dir() -> Iterator[Path]:
    """A scratch directory that the ``nobody`` user can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="interposer-tests-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mountpoint = line.split()[4]
        if mountpoint.startswith(str(path)):
            unmount(mountpoint, lazy=True)
    # Mountpoints are scratch/<test>/<mnt>: drop their control sockets too.
    for candidate in path.glob("*/*"):
        runtime_path_for(candidate, ".sock").unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def state_dir(world_dir: Path) -> Iterator[Path]:
    """The state directory of every mount and command the tests start: kept span files go to scratch space, never
    to the real ~/.local/state or /var/lib (the variable rules for root too)."""
    path = world_dir / "state"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(STATE_DIR_VARIABLE, str(path))
        yield path


@pytest.fixture
def scratch(world_dir: Path, request: pytest.FixtureRequest) -> Path:
    """A fresh, world-traversable directory for one test."""
    path = Path(tempfile.mkdtemp(prefix=request.node.name[:40] + "-", dir=world_dir))
    path.chmod(0o755)
    return path


MountFactory = Callable[..., MountProcess]


@pytest.fixture
def mount_factory(scratch: Path) -> Iterator[MountFactory]:
    """Start mounts on demand; every one is stopped, and checked to have exited cleanly, at teardown."""
    require_fuse()
    started: list[tuple[MountProcess, bool]] = []
    logs: list[Path] = []

    def start(
        backing: Path | None = None,
        args: Sequence[str] = (),
        *,
        mountpoint: Path | None = None,
        expect_clean: bool = True,
        env: dict[str, str] | None = None,
    ) -> MountProcess:
        index = len(started)
        backing = backing or scratch / f"backing{index}"
        mountpoint = mountpoint or scratch / f"mnt{index}"
        backing.mkdir(exist_ok=True, mode=0o755)
        mountpoint.mkdir(exist_ok=True, mode=0o755)
        log_path = scratch / f"mount{index}.log"
        logs.append(log_path)
        with log_path.open("wb") as log:
            process = MountProcess(backing, mountpoint, args, log=log, env=env).start()
        started.append((process, expect_clean))
        return process

    yield start
    failures = []
    for (process, expect_clean), log_path in zip(started, logs, strict=True):
        if process.process is not None and process.process.poll() is None and expect_clean:
            internal = process.status()["internal_errors"]
            if internal:
                failures.append(f"{process.mountpoint}: {internal} internal errors")
        code = process.stop()
        if expect_clean and code != 0:
            failures.append(f"{process.mountpoint}: exit code {code}\n{log_path.read_text()[-4000:]}")
        assert mount_at(process.mountpoint) is None
        assert not is_stale(process.mountpoint)
    assert not failures, "\n".join(failures)


@pytest.fixture
def mounted(mount_factory: MountFactory) -> MountProcess:
    """One passthrough mount with the default configuration."""
    return mount_factory()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One real control plane (tests/kube.py) for the session: it takes most of a minute to start."""
    from .kube import control_plane

    with control_plane(tmp_path_factory.mktemp("cluster")) as plane:
        yield plane
