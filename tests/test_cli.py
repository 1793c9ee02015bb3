"""The command line: mount lifecycle, signals, stale mounts and clear errors for bad input."""

from __future__ import annotations

import importlib
import signal
import subprocess
from pathlib import Path

import pytest

from interposer.config import InterposerConfig
from interposer.mount.child import MountProcess
from interposer.mount.table import is_stale, mount_at

from .conftest import MountFactory, interposer, require_fuse, wait_for


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_cleanly(mount_factory: MountFactory, sig: signal.Signals) -> None:
    mount = mount_factory()
    (mount.mountpoint / "kept").write_text("data")
    assert mount.stop(sig) == 0
    assert mount_at(mount.mountpoint) is None
    assert (mount.backing / "kept").read_text() == "data"


def test_unmount_command_ends_the_server(mount_factory: MountFactory) -> None:
    mount = mount_factory()
    result = interposer("unmount", str(mount.mountpoint))
    assert result.returncode == 0, result.stderr
    assert mount.process is not None
    assert mount.process.wait(timeout=20) == 0
    assert mount_at(mount.mountpoint) is None


def test_stale_mount_is_reported_and_force_recovers(scratch: Path) -> None:
    require_fuse()
    backing, mountpoint = scratch / "backing", scratch / "mnt"
    backing.mkdir()
    mountpoint.mkdir()
    (backing / "file").write_text("survives")
    first = MountProcess(backing, mountpoint, log=subprocess.DEVNULL).start()
    assert first.process is not None
    first.process.kill()
    first.process.wait()
    wait_for(lambda: is_stale(mountpoint), what="the mount to go stale")

    refused = interposer("mount", str(backing), str(mountpoint))
    assert refused.returncode == 2
    assert "stale FUSE mount (Transport endpoint is not connected)" in refused.stderr
    assert "--force" in refused.stderr
    assert is_stale(mountpoint)

    unmount_refused = interposer("unmount", str(mountpoint))
    assert unmount_refused.returncode == 2
    assert "use --force" in unmount_refused.stderr

    with MountProcess(backing, mountpoint, ["--force"], log=subprocess.DEVNULL):
        assert (mountpoint / "file").read_text() == "survives"
    assert mount_at(mountpoint) is None
    assert not is_stale(mountpoint)


def test_unmount_force_clears_a_stale_mount(scratch: Path) -> None:
    require_fuse()
    (scratch / "b").mkdir()
    (scratch / "m").mkdir()
    mount = MountProcess(scratch / "b", scratch / "m", log=subprocess.DEVNULL).start()
    assert mount.process is not None
    mount.process.kill()
    mount.process.wait()
    wait_for(lambda: is_stale(scratch / "m"), what="the mount to go stale")
    result = interposer("unmount", "--force", str(scratch / "m"))
    assert result.returncode == 0, result.stderr
    assert not is_stale(scratch / "m")
    assert mount_at(scratch / "m") is None


def test_mounting_over_a_live_mount_is_refused(mounted: MountProcess, scratch: Path) -> None:
    result = interposer("mount", str(scratch), str(mounted.mountpoint))
    assert result.returncode == 2
    assert "already a FUSE mount" in result.stderr
    assert mounted.process is not None
    assert mounted.process.poll() is None


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("cache:\n  entry_timeout: -1\n", "cache.entry_timeout: Input should be greater than or equal to 0"),
        ("cache:\n  keep_cache: maybe\n", "cache.keep_cache: Input should be a valid boolean"),
        ("cache:\n  colour: red\n", "cache.colour: unknown field; allowed fields: entry_timeout, attr_timeout"),
        ("log_level: loud\n", "log_level: Input should be 'debug', 'info', 'warning' or 'error'"),
        ("bogus: 1\n", f"bogus: unknown field; allowed fields: {', '.join(InterposerConfig.model_fields)}"),
        ("extra_layers: ['nope']\n", "extra_layers: Value error, 'nope' is not of the form 'module:attribute'"),
        (
            "faults:\n  rules:\n    - match: {paths: ['/db/[ab']}\n      action: {errno: EIO}\n",
            "faults.rules.0.match.paths: Value error, '/db/[ab': unbalanced [ ] in the glob",
        ),
        (
            "faults:\n  rules:\n    - match: {paths: ['/a/../etc']}\n      action: {errno: EIO}\n",
            "'..' is not allowed; paths are below the mount root",
        ),
        (
            "faults:\n  rules:\n    - action: {errno: ENOPE}\n",
            "faults.rules.0.action.errno: Value error, 'ENOPE' is not an errno symbol",
        ),
        (
            "faults:\n  rules:\n    - action: {latency: {kind: gamma}}\n",
            "does not match any of the expected tags: 'fixed', 'uniform', 'normal', 'exponential', 'pareto'",
        ),
        (
            "faults:\n  rules:\n    - match: {every_nth: 2, only_nth: 3}\n      action: {errno: EIO}\n",
            "every_nth and only_nth exclude each other",
        ),
        ("throttle:\n  mode: slow\n", "throttle.mode: Input should be 'wait' or 'fail'"),
        (
            "throttle:\n  read_bytes: {rate: 10, bust: 5}\n",
            "throttle.read_bytes.bust: unknown field; allowed fields: rate, burst",
        ),
        ("metrics:\n  exporters: [statsd]\n", "metrics.exporters.0: Input should be 'otlp' or 'prometheus'"),
        (
            "metrics:\n  prometheus_port: 70000\n",
            "metrics.prometheus_port: Input should be less than or equal to 65535",
        ),
        ("- a list\n", "must hold a mapping at the top level"),
        ("cache: [\n", "is not valid YAML"),
    ],
)
def test_bad_config_names_the_field_and_mounts_nothing(scratch: Path, config: str, expected: str) -> None:
    (scratch / "b").mkdir()
    (scratch / "m").mkdir()
    (scratch / "config.yaml").write_text(config)
    result = interposer("mount", str(scratch / "b"), str(scratch / "m"), "--config", str(scratch / "config.yaml"))
    assert result.returncode == 2
    assert expected in result.stderr
    assert mount_at(scratch / "m") is None


def test_every_bad_field_is_reported_at_once(scratch: Path) -> None:
    (scratch / "config.yaml").write_text("cache:\n  attr_timeout: -2\nfuse:\n  max_workers: 0\n")
    result = interposer("mount", str(scratch), str(scratch), "--config", str(scratch / "config.yaml"))
    assert "cache.attr_timeout" in result.stderr
    assert "fuse.max_workers" in result.stderr


def test_bad_flag_names_the_flag(scratch: Path) -> None:
    result = interposer("mount", str(scratch), str(scratch), "--entry-timeout", "soon")
    assert result.returncode == 2
    assert "cache.entry_timeout (--entry-timeout): Input should be a valid number" in result.stderr
    result = interposer("mount", str(scratch), str(scratch), "--attr-timeout", "-1")
    assert "cache.attr_timeout (--attr-timeout): Input should be greater than or equal to 0" in result.stderr


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL): 'http/json' is not supported; allowed: grpc, http/protobuf",
        ),
        (
            {"OTEL_METRICS_EXPORTER": "prometheus,statsd"},
            "OTEL_METRICS_EXPORTER: statsd not supported; allowed: otlp, prometheus, none",
        ),
        ({"OTEL_EXPORTER_PROMETHEUS_PORT": "http"}, "OTEL_EXPORTER_PROMETHEUS_PORT: 'http' is not a port"),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "-5"}, "OTEL_METRIC_EXPORT_INTERVAL: '-5' is not a positive number"),
    ],
)
def test_bad_standard_otel_variable_is_named(scratch: Path, variables: dict[str, str], expected: str) -> None:
    (scratch / "b").mkdir()
    (scratch / "m").mkdir()
    result = interposer("mount", str(scratch / "b"), str(scratch / "m"), env=variables)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert mount_at(scratch / "m") is None


def test_flags_override_the_config_file(mount_factory: MountFactory, scratch: Path) -> None:
    (scratch / "config.yaml").write_text("cache:\n  entry_timeout: 5\n  attr_timeout: 7\n")
    mount = mount_factory(args=["--config", str(scratch / "config.yaml"), "--attr-timeout", "0.5"])
    cache = mount.status()["config"]["cache"]
    assert (cache["entry_timeout"], cache["attr_timeout"]) == (5.0, 0.5)


def test_missing_backing_and_mountpoint_are_named(scratch: Path) -> None:
    result = interposer("mount", str(scratch / "nope"), str(scratch))
    assert result.returncode == 2
    assert f"backing directory {scratch / 'nope'} does not exist" in result.stderr
    result = interposer("mount", str(scratch), str(scratch / "nowhere"))
    assert result.returncode == 2
    assert f"mountpoint {scratch / 'nowhere'} does not exist" in result.stderr


def test_ctl_on_something_not_mounted_says_so(scratch: Path) -> None:
    result = interposer("ctl", str(scratch), "status")
    assert result.returncode == 2
    assert "cannot reach the control socket" in result.stderr
    assert interposer("unmount", str(scratch)).stderr.strip().endswith("is not a mountpoint")


def test_ctl_status_reports_the_mount(mounted: MountProcess) -> None:
    result = interposer("ctl", str(mounted.mountpoint), "status")
    assert result.returncode == 0, result.stderr
    assert f'"backing": "{mounted.backing}"' in result.stdout
    assert '"inodes": 1' in result.stdout


def test_demo_runs_end_to_end(scratch: Path) -> None:
    require_fuse()
    result = interposer("demo", "--workdir", str(scratch / "demo"), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checksums ok 50/50" in result.stdout
    assert "demo succeeded" in result.stdout
    assert "slowest operations:" in result.stdout
    assert "errors per errno:" in result.stdout
    assert mount_at(scratch / "demo" / "mnt") is None
    assert len(list((scratch / "demo" / "backing" / "archive").iterdir())) == 20


@pytest.mark.parametrize("module", ["interposer.config_reference", "interposer.layers.metrics.reference"])
def test_generated_reference_pages_are_fresh(module: str) -> None:
    """docs/configuration.md follows the config model; docs/metrics.md follows the names module."""
    from interposer.docgen import updated

    reference = importlib.import_module(module)
    page = reference.PAGE.read_text()
    assert updated(page, reference.COMMAND, reference.render()) == page, (
        f"{reference.PAGE} is stale: run {reference.COMMAND}"
    )
