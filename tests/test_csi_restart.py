"""Volumes outlive the node plugin: its cgroup killed mid-workload, restarted or upgraded, and its servers lost.

A container is a cgroup: the plugin runs in a cgroup v2 directory of its own,
the volumes' servers in sibling cgroups, and the pod's workload in a mount
namespace of its own that sees the volumes through bind mounts of the targets,
as a container does.  Killing the plugin's cgroup with ``cgroup.kill`` is what
a crash, an OOM kill or a DaemonSet rollout does to the plugin's container.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import site
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from interposer.csi import csi_pb2
from interposer.csi.fusemount import FSTYPE
from interposer.csi.metrics import SERVERS_LOST_TOTAL
from interposer.csi.state import Publication
from interposer.local.ports import free_port
from interposer.mount.table import mount_at

from .conftest import require, require_command, require_fuse, wait_for
from .csi_plugin import CsiPlugin
from .test_csi import POD, publish, stats, target_in, unpublish

WORKLOAD = Path(__file__).with_name("csi_workload.py")
REPOSITORY = Path(__file__).parents[1]
ROUNDS_BEFORE_KILL = 3
ROUNDS_AFTER_RESTART = 3


def cgroup2_root() -> Path | None:
    """Where cgroup v2 is mounted (/sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid ones)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    return None


def _remove_cgroup(path: Path) -> None:
    for child in sorted((p for p in path.iterdir() if p.is_dir()), reverse=True):
        _remove_cgroup(child)
    (path / "cgroup.kill").write_text("1\n")
    wait_for(lambda: _removed(path), what=f"{path} to empty and go")


def _removed(path: Path) -> bool:
    try:
        path.rmdir()
    except OSError:
        return False
    return True


@pytest.fixture
def cgroups() -> Iterator[tuple[Path, Path]]:
    """The plugin's cgroup and, beside it, the one under which its servers get theirs."""
    require_fuse()
    require_command("unshare")
    root = cgroup2_root()
    require(root is not None, "a cgroup v2 hierarchy (mount -t cgroup2)")
    assert root is not None
    parent = root / f"interposer-test-{uuid.uuid4().hex[:8]}"
    try:
        parent.mkdir()
    except OSError as exc:
        require(False, f"a writable cgroup v2 hierarchy at {root} ({exc.strerror})")
    try:
        require((parent / "cgroup.kill").exists(), "cgroup.kill (Linux 5.14 or later)")
        plugin, servers = parent / "plugin", parent / "servers"
        plugin.mkdir()
        servers.mkdir()
        yield plugin, servers
    finally:
        _remove_cgroup(parent)


class Workload:
    """The workload in a mount namespace of its own, writing through bind mounts of the targets."""

    def __init__(self, scratch: Path, targets: list[Path]) -> None:
        self.progress = scratch / "workload.progress"
        self.stop_file = scratch / "workload.stop"
        views = [scratch / "pod-view" / f"volume{index}" for index in range(len(targets))]
        binds = []
        for target, view in zip(targets, views, strict=True):
            view.mkdir(parents=True)
            binds.append(f"mount --bind {target} {view}")
        script = " && ".join([*binds, f'exec "$@" {self.progress} {self.stop_file} {" ".join(map(str, views))}'])
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
        self.process = subprocess.Popen(
            [*command, sys.executable, str(WORKLOAD)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def rounds(self) -> int:
        if self.process.poll() is not None:
            _, err = self.process.communicate()
            raise AssertionError(f"workload ended early: {err.decode()}")
        try:
            return int(self.progress.read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def wait_rounds(self, count: int) -> None:
        wait_for(lambda: self.rounds() >= count, timeout=30, what=f"{count} workload rounds")

    def finish(self) -> dict[str, str]:
        self.stop_file.touch()
        out, err = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, err.decode()
        written: dict[str, str] = json.loads(out)
        return written

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def publish_volumes(plugin: CsiPlugin, count: int) -> list[Path]:
    targets = []
    for index in range(count):
        target = target_in(plugin, f"kept{index}")
        publish(plugin, f"csi-kept-{index}", target, POD)
        targets.append(target)
    return targets


def servers_of(plugin: CsiPlugin) -> dict[str, tuple[int | None, int | None]]:
    return {record.target_path: (record.pid, record.start_time) for record in plugin.publications()}


def check_served_and_clean_up(plugin: CsiPlugin, targets: list[Path], written: dict[str, str]) -> None:
    """The backing directories hold what the workload wrote; unpublishing leaves nothing mounted or running."""
    records: dict[str, Publication] = {record.target_path: record for record in plugin.publications()}
    for index, target in enumerate(targets):
        backing = Path(records[str(target)].backing)
        files = {name.partition("/")[2]: digest for name, digest in written.items() if name.startswith(f"{index}/")}
        assert len(files) >= ROUNDS_BEFORE_KILL + ROUNDS_AFTER_RESTART
        for name, digest in files.items():
            assert hashlib.sha256((backing / name).read_bytes()).hexdigest() == digest, name
        assert not stats(plugin, f"csi-kept-{index}", target).volume_condition.abnormal
    pids = [record.pid for record in records.values()]
    for index, target in enumerate(targets):
        unpublish(plugin, f"csi-kept-{index}", target)
        assert mount_at(target) is None
    assert plugin.publications() == []
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    assert [line for line in mounts if str(plugin.root) in line and FSTYPE in line] == [], "left mounted"
    for pid in pids:
        assert pid is not None
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"
    assert plugin.server_cgroup is not None
    assert [path for path in plugin.server_cgroup.iterdir() if path.is_dir()] == [], "server cgroups left behind"


def test_volumes_keep_serving_while_the_plugin_cgroup_is_killed_and_restarted(
    scratch: Path, cgroups: tuple[Path, Path]
) -> None:
    plugin_cgroup, server_cgroup = cgroups
    with CsiPlugin(scratch, cgroup=plugin_cgroup, server_cgroup=server_cgroup) as plugin:
        targets = publish_volumes(plugin, 2)
        before = servers_of(plugin)
        for record in plugin.publications():  # each server runs in a cgroup of its own, beside the plugin's
            assert record.cgroup is not None
            assert Path(record.cgroup).parent == server_cgroup
            assert str(record.pid) in Path(record.cgroup, "cgroup.procs").read_text().split()
        workload = Workload(scratch, targets)
        try:
            workload.wait_rounds(ROUNDS_BEFORE_KILL)
            plugin.kill_cgroup()
            killed_at = workload.rounds()
            plugin.start()
            assert servers_of(plugin) == before, "the restarted plugin adopts the running servers"
            for index, target in enumerate(targets):  # every RPC stays idempotent across the restart
                publish(plugin, f"csi-kept-{index}", target, POD)
                assert not stats(plugin, f"csi-kept-{index}", target).volume_condition.abnormal
            assert servers_of(plugin) == before, "a repeated publish after a restart starts no new server"
            workload.wait_rounds(killed_at + ROUNDS_AFTER_RESTART)
            written = workload.finish()
        finally:
            workload.kill()
        check_served_and_clean_up(plugin, targets, written)


@pytest.fixture(scope="module")
def other_install(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The repository's files, copied and installed (not editable) in a venv of its own under another version.

    The dependencies come from this environment (a .pth line), so nothing is
    downloaded.  The build generates the CSI protobuf module into the install.
    """
    root = tmp_path_factory.mktemp("other-install")
    source = root / "source"
    source.mkdir()
    listed = subprocess.run(["git", "-C", str(REPOSITORY), "ls-files", "-z"], capture_output=True, check=True)
    for name in listed.stdout.decode().split("\0"):  # the working tree's files, not generated ones
        if name and (REPOSITORY / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPOSITORY / name, source / name)
    version = "0.1.0+upgrade." + uuid.uuid4().hex[:6]
    init = source / "interposer" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.1.0"', f'__version__ = "{version}"'))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", str(source)],
        check=True,
        capture_output=True,
    )
    installed = Path(purelib) / "interposer"
    assert installed.is_dir(), "the other install holds its own copy of the package"
    assert (installed / "csi" / "csi_pb2.py").is_file(), "the build generates the CSI protobuf module"
    located = subprocess.run(
        [python, "-c", "import interposer; print(interposer.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    ).stdout.strip()
    assert Path(located).is_relative_to(installed), located
    return python, version


def test_volumes_keep_serving_across_an_upgrade_of_the_plugin(
    scratch: Path, cgroups: tuple[Path, Path], other_install: tuple[str, str]
) -> None:
    plugin_cgroup, server_cgroup = cgroups
    new_python, new_version = other_install
    old = CsiPlugin(scratch, cgroup=plugin_cgroup, server_cgroup=server_cgroup)
    new = CsiPlugin(
        scratch, cgroup=plugin_cgroup, server_cgroup=server_cgroup, program=(new_python, "-m", "interposer")
    )
    try:
        old.start()
        targets = publish_volumes(old, 2)
        before = servers_of(old)
        workload = Workload(scratch, targets)
        try:
            workload.wait_rounds(ROUNDS_BEFORE_KILL)
            old.kill_cgroup()
            killed_at = workload.rounds()
            new.start()
            info = new.call("Identity", "GetPluginInfo", csi_pb2.GetPluginInfoRequest())
            assert info.vendor_version == new_version, "the new version serves the node"
            assert servers_of(new) == before, "the new version adopts the old version's servers"
            for index, target in enumerate(targets):
                publish(new, f"csi-kept-{index}", target, POD)
            workload.wait_rounds(killed_at + ROUNDS_AFTER_RESTART)
            written = workload.finish()
        finally:
            workload.kill()
        check_served_and_clean_up(new, targets, written)
        extra = new.publications()
        assert extra == []
        fresh = target_in(new, "after-upgrade")  # a volume published now gets a server of the new version
        publish(new, "csi-new", fresh, POD)
        [record] = new.publications()
        assert record.pid is not None
        assert Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")[0] == new_python.encode()
        unpublish(new, "csi-new", fresh)
    finally:
        new.cleanup()
        old.cleanup()


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def test_a_server_that_hangs_or_dies_is_reported_in_bounded_time_counted_and_recovered(
    scratch: Path, cgroups: tuple[Path, Path]
) -> None:
    _, server_cgroup = cgroups
    port = free_port()
    with CsiPlugin(scratch, "--metrics-address", f"127.0.0.1:{port}", server_cgroup=server_cgroup) as plugin:
        target = target_in(plugin, "fragile")
        publish(plugin, "csi-fragile", target, POD)
        [record] = plugin.publications()
        assert record.pid is not None
        assert record.cgroup is not None
        assert metric(port, SERVERS_LOST_TOTAL) == 0

        os.kill(record.pid, signal.SIGSTOP)  # hung: the mount takes requests and answers none
        started = time.monotonic()
        condition = stats(plugin, "csi-fragile", target).volume_condition
        elapsed = time.monotonic() - started
        assert condition.abnormal
        assert "does not answer within 1.0s" in condition.message
        assert elapsed < 1.0 + 5, f"NodeGetVolumeStats took {elapsed:.1f}s on a hung mount"
        stats(plugin, "csi-fragile", target)  # the same loss, asked about again, is counted once
        assert metric(port, SERVERS_LOST_TOTAL) == 1
        assert "(server hung)" in plugin.log()

        Path(record.cgroup, "cgroup.kill").write_text("1\n")  # then it dies: the kernel ends the connection
        wait_for(lambda: "gone" in stats(plugin, "csi-fragile", target).volume_condition.message, what="gone")
        assert metric(port, SERVERS_LOST_TOTAL) == 1, "still the same loss"

        publish(plugin, "csi-fragile", target, POD)  # publishing again recovers the volume
        [recovered] = plugin.publications()
        assert recovered.pid != record.pid
        assert recovered.lost is None
        (target / "after-recovery").write_text("ok")
        assert not stats(plugin, "csi-fragile", target).volume_condition.abnormal

        assert recovered.cgroup is not None
        Path(recovered.cgroup, "cgroup.kill").write_text("1\n")
        wait_for(lambda: stats(plugin, "csi-fragile", target).volume_condition.abnormal, what="the second loss")
        assert metric(port, SERVERS_LOST_TOTAL) == 2
        unpublish(plugin, "csi-fragile", target)
        assert mount_at(target) is None
