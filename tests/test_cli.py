"""The command line: mount lifecycle, signals, stale mounts and clear errors for bad input."""

from __future__ import annotations

import errno
import importlib
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from interposer import __version__
from interposer.config import InterposerConfig
from interposer.local.ports import free_port
from interposer.mount.child import MountProcess
from interposer.mount.table import is_stale, mount_at
from interposer.telemetry.shipper import EXIT_TIMEOUT
from interposer.telemetry.spanfile import rotated

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

    asked = interposer("ctl", str(mountpoint), "status")
    assert asked.returncode == 2
    assert f"{mountpoint} is a stale FUSE mount" in asked.stderr
    assert f"interposer unmount --force {mountpoint}" in asked.stderr
    assert "Connection refused" not in asked.stderr

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
    assert result.stderr == (
        f"interposer: {mounted.mountpoint} is already an interposer mount: 'interposer ctl {mounted.mountpoint} "
        f"status' shows what it serves, 'interposer unmount {mounted.mountpoint}' stops it\n"
    )
    assert mounted.process is not None
    assert mounted.process.poll() is None


def test_mounting_over_a_directory_that_holds_files_needs_allow_nonempty(scratch: Path) -> None:
    """A mount there hides the files until unmount, which looks like losing them: refused unless asked for."""
    require_fuse()
    backing, mountpoint = scratch / "backing", scratch / "mnt"
    backing.mkdir()
    mountpoint.mkdir()
    (mountpoint / "underneath").write_text("hidden while mounted")
    refused = interposer("mount", str(backing), str(mountpoint))
    assert refused.returncode == 2
    assert refused.stderr == (
        f"interposer: {mountpoint} is not empty (it holds underneath): a mount there hides them until unmount. "
        "Mount on an empty directory, or pass --allow-nonempty (fuse.allow_nonempty in a config file) if that is "
        "wanted\n"
    )
    assert mount_at(mountpoint) is None

    with (scratch / "mount.log").open("wb") as log, MountProcess(backing, mountpoint, ["--allow-nonempty"], log=log):
        assert not (mountpoint / "underneath").exists()
    warning = f"{mountpoint} is not empty: what it holds (underneath) is hidden until unmount"
    assert warning in (scratch / "mount.log").read_text()
    assert (mountpoint / "underneath").read_text() == "hidden while mounted"

    (scratch / "config.yaml").write_text("fuse: {allow_nonempty: true}\n")
    with MountProcess(backing, mountpoint, ["--config", str(scratch / "config.yaml")], log=subprocess.DEVNULL) as mount:
        assert mount.status()["config"]["fuse"]["allow_nonempty"] is True


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
        ("cache: [\n", "config.yaml:2:1: not valid YAML: expected the node content, but found '<stream end>'"),
        (
            "cache:\n  entry_timeout: 1\n   attr_timeout: 2\n",
            "config.yaml:3:16: not valid YAML: mapping values are not allowed here\n       attr_timeout: 2\n",
        ),
    ],
)
def test_bad_config_names_the_field_and_mounts_nothing(scratch: Path, config: str, expected: str) -> None:
    (scratch / "b").mkdir()
    (scratch / "m").mkdir()
    (scratch / "config.yaml").write_text(config)
    result = interposer("mount", str(scratch / "b"), str(scratch / "m"), "--config", str(scratch / "config.yaml"))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "<unicode string>" not in result.stderr
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


def test_a_stack_rule_file_that_is_no_rule_file_is_refused_before_anything_starts(scratch: Path) -> None:
    rules = scratch / "rules.yaml"
    rules.write_text("alerts: [oops\n")
    result = interposer("stack", "--dir", str(scratch / "stack"), "--rules", str(rules), "up")
    assert result.returncode == 2
    assert result.stderr.startswith(f"interposer: --rules {rules}: while parsing"), result.stderr
    rules.write_text("- alert: A\n")
    result = interposer("stack", "--dir", str(scratch / "stack"), "--rules", str(rules), "up")
    assert result.stderr == (
        f"interposer: --rules {rules}: not a Prometheus rule file (a mapping with a list of groups)\n"
    )
    assert not (scratch / "stack").exists()


def test_ctl_on_something_not_mounted_says_so(scratch: Path) -> None:
    result = interposer("ctl", str(scratch), "status")
    assert result.returncode == 2
    assert result.stderr == (
        f"interposer: {scratch} is not a mount: nothing is mounted there (mount it with 'interposer mount BACKING "
        f"{scratch}', or find the running ones with 'findmnt -t fuse.interposer')\n"
    )
    assert interposer("unmount", str(scratch)).stderr.strip().endswith("is not a mountpoint")


def test_ctl_on_a_path_that_does_not_exist_says_so(scratch: Path) -> None:
    """Not a suggestion to mount there: a mistyped path is the likelier cause."""
    for missing in (scratch / "nowhere", scratch / "nowhere" / "deeper"):
        result = interposer("ctl", str(missing), "status")
        assert result.returncode == 2
        assert result.stderr == (
            f"interposer: {missing} does not exist: check the path ('findmnt -t fuse.interposer' lists the "
            "interposer mounts)\n"
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "holds no settings: it needs a faults and/or throttle and/or crash section"),
        (
            "fautls: {rules: []}\n",
            "'fautls' is not a configuration section; allowed while mounted: faults, throttle, crash",
        ),
        ("cache: {entry_timeout: 2}\n", "cache: cannot change while mounted; allowed: faults, throttle, crash"),
    ],
)
def test_ctl_set_refuses_what_changes_nothing(mounted: MountProcess, scratch: Path, text: str, expected: str) -> None:
    before = mounted.status()["config"]
    (scratch / "change.yaml").write_text(text)
    result = interposer("ctl", str(mounted.mountpoint), "set", str(scratch / "change.yaml"))
    assert result.returncode == 2
    assert expected in result.stderr
    assert result.stdout == ""
    assert mounted.status()["config"] == before


def test_version() -> None:
    result = interposer("--version")
    assert result.returncode == 0
    assert result.stdout == f"interposer {__version__}\n"


def test_each_mount_names_its_metrics_address(mount_factory: MountFactory, scratch: Path) -> None:
    """Two mounts cannot both have the default port: each says where its metrics are, and they answer there."""
    mounts = [mount_factory(), mount_factory()]
    urls = [mount.status()["metrics_url"] for mount in mounts]
    assert len(set(urls)) == 2
    for index, (mount, url) in enumerate(zip(mounts, urls, strict=True)):
        first_line = (scratch / f"mount{index}.log").read_text().splitlines()[0]
        assert f"mounted {mount.backing} at {mount.mountpoint}; metrics: scrape {url};" in first_line
        (mount.mountpoint / f"file{index}").write_text("x")
        with urllib.request.urlopen(url, timeout=10) as response:
            assert f'fuse_mountpoint="{mount.mountpoint}"' in response.read().decode()


def test_a_dead_collector_does_not_hold_the_stopping_mount(mount_factory: MountFactory, scratch: Path) -> None:
    """Spans queued for a collector that refuses every connection are given up on after FINAL_EXPORT_TIMEOUT.

    Before, the SDK retried each batch for its own timeout and the mount's backstop (EXIT_TIMEOUT) killed the
    export process: the mount's process lingered about half a minute after its unmount.
    """
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    mount = mount_factory(env={"OTEL_EXPORTER_OTLP_ENDPOINT": dead})
    for index in range(1000):  # a few thousand spans: many batches queued for the dead collector
        (mount.mountpoint / f"f{index}").write_bytes(b"")
    started = time.monotonic()
    assert mount.stop(timeout=EXIT_TIMEOUT + 30) == 0
    took = time.monotonic() - started
    log = (scratch / "mount0.log").read_text()
    assert "did not finish within" not in log, "the export process had to be killed"
    assert took < EXIT_TIMEOUT, f"the mount's process ended {took:.1f} s after it was told to stop"


def test_traces_reads_rotation_and_partial_lines_and_refuses_other_files(
    mount_factory: MountFactory, scratch: Path
) -> None:
    span_file = scratch / "spans.jsonl"
    (scratch / "config.yaml").write_text(f"tracing: {{file: {span_file}, file_max_bytes: 65536, export_delay: 0.1}}\n")
    mount = mount_factory(args=["--config", str(scratch / "config.yaml")])
    for index in range(300):
        (mount.mountpoint / f"f{index}").write_bytes(b"")
    assert mount.stop() == 0
    assert rotated(span_file).exists(), "the workload did not fill the span file past its rotation"
    with span_file.open("a") as handle:  # as a mount killed in the middle of a write leaves it
        handle.write('{"resourceSpans":[{"resource":{"attri')
    in_each = [path.read_text().count('"name":"fuse.create"') for path in (rotated(span_file), span_file)]
    assert all(in_each), f"creates in the rotation and the file: {in_each}"
    found = interposer("traces", str(span_file), "--op", "create", "--limit", "1")
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines()[-1] == f"{sum(in_each)} matching spans, first 1 shown"
    summary = interposer("traces", str(span_file), "--summary")
    assert summary.returncode == 0, summary.stderr
    assert "errors per errno:" in summary.stdout

    (scratch / "notes.txt").write_text("shopping list\n")
    (scratch / "other.json").write_text('{"name": "not spans"}\n')
    for other in (scratch / "notes.txt", scratch / "other.json"):
        refused = interposer("traces", str(other))
        assert refused.returncode == 2
        assert (
            refused.stderr == f"interposer: {other}:1: not a span file (each line must be an OTLP/JSON trace "
            "export request, as tracing.file writes)\n"
        )
    unknown = interposer("traces", str(span_file), "--errno", "ENOTREAL")
    assert unknown.returncode == 2
    assert "'ENOTREAL' is not an errno name" in unknown.stderr
    assert "ENOENT, EIO" in unknown.stderr
    alias = interposer("traces", str(span_file), "--errno", "ewouldblock")  # spans record EAGAIN
    assert alias.returncode == 0, alias.stderr
    by_name = interposer("traces", str(span_file), "--errno", "ENOENT").stdout
    assert "ENOENT" in by_name  # the lookups before each create
    assert interposer("traces", str(span_file), "--errno", str(errno.ENOENT)).stdout == by_name


def test_configuration_reference_speaks_yaml() -> None:
    from interposer.config_reference import render

    page = render()
    for python in ("PydanticUndefined", "Optional[", "typing.", "interposer.", "tuple[", "dict[", "NoneType"):
        assert python not in page
    assert "| `tracing.headers` | mapping of string to string | `{}` |" in page
    assert "| `fuse.allow_other` | boolean | `true` |" in page


def test_ctl_status_reports_the_mount(mounted: MountProcess) -> None:
    result = interposer("ctl", str(mounted.mountpoint), "status")
    assert result.returncode == 0, result.stderr
    assert f'"backing": "{mounted.backing}"' in result.stdout
    assert '"inodes": 1' in result.stdout


@pytest.mark.parametrize("module", ["interposer.config_reference", "interposer.metrics_reference"])
def test_generated_reference_pages_are_fresh(module: str) -> None:
    """docs/configuration.md follows the config model; docs/metrics.md follows the names module."""
    from interposer.docgen import updated

    reference = importlib.import_module(module)
    page = reference.PAGE.read_text()
    assert updated(page, reference.COMMAND, reference.render()) == page, (
        f"{reference.PAGE} is stale: run {reference.COMMAND}"
    )
