"""The ``interposer`` command line.

The cache flags of ``mount`` are generated from ``CacheConfig``, so a flag, its
help text and its validation are defined once, in the config model.
"""

from __future__ import annotations

import difflib
import errno
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from . import __version__
from .config import CacheConfig, ConfigError, FuseConfig, InterposerConfig, load_config, read_config_file
from .csi.volume_server import main as volume_server
from .logs import configure_logging
from .mount.control import NoAnswerError, NotAMountError, ask, socket_path_for
from .mount.reconfigure import RUNTIME_SECTIONS
from .mount.registry import SWITCHABLE_LAYERS
from .mount.table import is_stale, mount_at, unmount
from .names import K8S_ENVIRONMENT, RESOURCE_K8S_NODE, OpName

_CACHE_FLAGS = {f"cache.{name}": "--" + name.replace("_", "-") for name in CacheConfig.model_fields}


def _cache_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add one option per CacheConfig field; booleans get --x/--no-x."""
    for name, field in reversed(CacheConfig.model_fields.items()):
        flag = _CACHE_FLAGS[f"cache.{name}"]
        help_text = f"{field.description} [default: {field.default}]"
        if field.annotation is bool:
            option = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)
        else:
            option = click.option(flag, name, type=str, default=None, help=help_text)
        command = option(command)
    return command


USAGE_ERROR = 2
"""Exit code of a usage or configuration error, as click gives for a bad option."""
FAILURE = 1
"""Exit code of a command that was used correctly but could not do its work."""


def _fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    click.echo(f"interposer: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="interposer", message="%(prog)s %(version)s")
def main() -> None:
    """A FUSE file-system interposer that traces, measures, slows and breaks file I/O."""


@main.command()
@click.argument("backing", type=click.Path(path_type=Path, file_okay=False))
@click.argument("mountpoint", type=click.Path(path_type=Path, file_okay=False))
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), help="YAML config file.")
@click.option("--force", is_flag=True, help="Clear a stale mount (Transport endpoint is not connected) first.")
@click.option("--allow-nonempty", is_flag=True, help=FuseConfig.model_fields["allow_nonempty"].description)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Log verbosity on stderr [default: info].",
)
@_cache_options
def mount(
    backing: Path,
    mountpoint: Path,
    config_file: Path | None,
    force: bool,
    allow_nonempty: bool,
    log_level: str | None,
    **cache: Any,
) -> None:
    """Mount a passthrough of BACKING at MOUNTPOINT; stays in the foreground until SIGINT/SIGTERM."""
    from .mount.serve import Mount, MountError, prepare_mountpoint

    given = {name: value for name, value in cache.items() if value is not None}
    overrides: dict[str, Any] = {"cache": given}
    if log_level is not None:
        overrides["log_level"] = log_level
    flags = {f"cache.{name}": _CACHE_FLAGS[f"cache.{name}"] for name in given}
    if allow_nonempty:
        overrides["fuse"] = {"allow_nonempty": True}
    try:
        config = load_config(config_file, overrides, flags)
    except ConfigError as exc:
        _fail(str(exc))
    configure_logging(config.log_level)
    try:
        prepare_mountpoint(mountpoint, force=force, allow_nonempty=config.fuse.allow_nonempty)
        Mount(backing, mountpoint, config).serve()
    except (ConfigError, MountError) as exc:
        _fail(str(exc))
    except (OSError, RuntimeError) as exc:
        _fail(str(exc), FAILURE)


@main.command(name="unmount")
@click.argument("mountpoint", type=click.Path(path_type=Path, file_okay=False))
@click.option("--force", is_flag=True, help="Detach lazily: works on busy and stale mounts.")
def unmount_command(mountpoint: Path, force: bool) -> None:
    """Unmount an interposer mount; say where its spans are, once its server has written them."""
    from .mount.kept_spans import reading_hint
    from .mount.stopping import span_writer, wait_for_exit

    stale = is_stale(mountpoint)
    if mount_at(mountpoint) is None and not stale:
        _fail(f"{mountpoint} is not a mountpoint")
    if stale and not force:
        _fail(f"{mountpoint} is a stale FUSE mount (Transport endpoint is not connected); use --force")
    writer = None if stale else span_writer(mountpoint)
    try:
        unmount(mountpoint, lazy=force)
    except OSError as exc:
        _fail(f"{exc.strerror}; --force detaches a busy mount", FAILURE)
    if writer is not None:
        if not wait_for_exit(writer):
            click.echo(
                f"interposer: its server (pid {writer.pid}) still runs (files still open keep a detached mount "
                "served): more spans may come",
                err=True,
            )
        click.echo(f"unmounted {mountpoint}; {reading_hint(writer.span_file)}")


@main.group()
@click.argument("mountpoint", type=click.Path(path_type=Path, file_okay=False))
@click.option("--socket", "socket_path", type=click.Path(path_type=Path), help="Control socket, if not the default.")
@click.pass_context
def ctl(context: click.Context, mountpoint: Path, socket_path: Path | None) -> None:
    """Talk to a running mount through its control socket: ctl MOUNTPOINT COMMAND."""
    context.obj = (mountpoint, socket_path or socket_path_for(mountpoint))


def _ask(context: click.Context, payload: dict[str, Any]) -> dict[str, Any]:
    mountpoint, path = context.obj
    try:
        reply = ask(mountpoint, path, payload)
    except NotAMountError as exc:
        _fail(str(exc))
    except NoAnswerError as exc:
        _fail(str(exc), FAILURE)
    if not reply.get("ok"):
        _fail(str(reply.get("error")))
    return reply


@ctl.command(name="status")
@click.pass_context
def ctl_status(context: click.Context) -> None:
    """The mount's state, active config, and fault and throttle counters."""
    click.echo(json.dumps(_ask(context, {"command": "status"}), indent=2))


def _check_runtime_sections(file: Path, sections: dict[str, Any]) -> None:
    """Refuse, before asking the mount, a file that changes nothing or names a section that is not one."""
    allowed = ", ".join(RUNTIME_SECTIONS)
    if not sections:
        _fail(f"{file} holds no settings: it needs a {' and/or '.join(RUNTIME_SECTIONS)} section")
    for name in sections:
        if name not in InterposerConfig.model_fields:
            _fail(f"{file}: {name!r} is not a configuration section; allowed while mounted: {allowed}")
        if name not in RUNTIME_SECTIONS:
            _fail(f"{file}: {name}: cannot change while mounted; allowed: {allowed} (remount for the rest)")


@ctl.command(name="set")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.pass_context
def ctl_set(context: click.Context, file: Path) -> None:
    """Replace the faults, throttle and/or crash sections with those in a YAML FILE, atomically; the rest is kept."""
    try:
        sections = read_config_file(file)
    except ConfigError as exc:
        _fail(str(exc))
    _check_runtime_sections(file, sections)
    reply = _ask(context, {"command": "configure", "sections": sections})
    click.echo(json.dumps({name: reply["config"][name] for name in sections}, indent=2))


@ctl.command(name="crash")
@click.pass_context
def ctl_crash(context: click.Context) -> None:
    """Drop every write not fsynced, as a power loss would (needs crash.enabled)."""
    click.echo(json.dumps(_ask(context, {"command": "crash"})["undone"]))


@ctl.command(name="enable")
@click.argument("layer", type=click.Choice(SWITCHABLE_LAYERS))
@click.pass_context
def ctl_enable(context: click.Context, layer: str) -> None:
    """Switch a layer on."""
    click.echo(json.dumps(_ask(context, {"command": "layer", "name": layer, "enabled": True})["layers"]))


@ctl.command(name="disable")
@click.argument("layer", type=click.Choice(SWITCHABLE_LAYERS))
@click.pass_context
def ctl_disable(context: click.Context, layer: str) -> None:
    """Switch a layer off (its settings are kept)."""
    click.echo(json.dumps(_ask(context, {"command": "layer", "name": layer, "enabled": False})["layers"]))


_STACK_DIR = Path.home() / ".local" / "state" / "cnfs-interposer" / "stack"


def _stack_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Where the local stack keeps its state and listens: the same options for ``stack`` and ``demo``."""
    for option in reversed(
        (
            click.option(
                "--dir",
                "directory",
                type=click.Path(path_type=Path, file_okay=False),
                default=_STACK_DIR,
                show_default=True,
                help="The local stack's state directory.",
            ),
            click.option("--prometheus-port", type=click.IntRange(1, 65535), default=9090, show_default=True),
            click.option("--alertmanager-port", type=click.IntRange(1, 65535), default=9093, show_default=True),
            click.option(
                "--otlp-port",
                type=click.IntRange(1, 65535),
                default=4317,
                show_default=True,
                help="The collector's OTLP/gRPC.",
            ),
            click.option(
                "--jaeger-port",
                type=click.IntRange(1, 65535),
                default=16686,
                show_default=True,
                help="Jaeger's query API.",
            ),
        )
    ):
        command = option(command)
    return command


@main.group()
@_stack_options
@click.option(
    "--environment",
    type=click.Choice(["default", "production"]),
    default="default",
    show_default=True,
    help="The helmfile environment whose rendered configurations the programs run.",
)
@click.option(
    "--rules",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Prometheus loads this rule file instead of the chart's: `python -m alerts --config OVERRIDES` writes one "
    "with thresholds and durations of your own.",
)
@click.pass_context
def stack(
    context: click.Context,
    directory: Path,
    prometheus_port: int,
    alertmanager_port: int,
    otlp_port: int,
    jaeger_port: int,
    environment: str,
    rules: Path | None,
) -> None:
    """The deployed observability stack on this machine: Prometheus with the alert rules, Alertmanager, Jaeger and
    the OpenTelemetry Collector, each with the configuration helmfile.d renders for it."""
    from .local.stack import LocalStack, StackError

    try:
        context.obj = LocalStack(
            directory, prometheus_port, alertmanager_port, otlp_port, jaeger_port, environment, rules
        )
    except StackError as exc:
        _fail(str(exc))


@stack.command(name="up")
@click.option("--webhook", help="Deliver alerts to this URL (Alertmanager webhook).")
@click.pass_context
def stack_up(context: click.Context, webhook: str | None) -> None:
    """Start the stack (or refresh its list of mounts)."""
    from .local.stack import StackError

    try:
        targets = context.obj.up(webhook)
    except StackError as exc:
        _fail(str(exc))
    click.echo(f"Prometheus   {context.obj.prometheus_url}")
    click.echo(f"Alertmanager {context.obj.alertmanager_url}")
    click.echo(f"Jaeger       {context.obj.jaeger_url}")
    click.echo(f"OTLP         {context.obj.otlp_endpoint} (a mount's OTEL_EXPORTER_OTLP_ENDPOINT)")
    click.echo(f"scraping {len(targets)} mount(s): " + ", ".join(f"{m} ({t})" for m, t in targets.items()))


@stack.command(name="down")
@click.pass_context
def stack_down(context: click.Context) -> None:
    """Stop the stack."""
    stopped = context.obj.down()
    click.echo("stopped " + (", ".join(stopped) if stopped else "nothing: the stack was not running"))


@main.command()
@click.option("--prometheus", default="http://127.0.0.1:9090", show_default=True, help="Prometheus to query.")
@click.option(
    "--spans",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Span file of the mount: its sessions and operations, and (unless --mount) which mount to cover.",
)
@click.option(
    "--mount",
    "mounts",
    multiple=True,
    metavar="MOUNTPOINT",
    help="Cover this mount (repeatable) [default: the span file's mount, else the only one Prometheus has].",
)
@click.option("--all-mounts", is_flag=True, help="Cover every mount Prometheus scrapes, summed.")
@click.option(
    "--since",
    type=click.IntRange(min=60),
    help="Seconds to cover, up to now [default: from the first to the last sample of the mount's data].",
)
@click.option(
    "--rate-window",
    help="Window of the rates plotted, e.g. 1m [default: four scrape intervals, or a step and one if longer].",
)
@click.option(
    "--output", type=click.Path(path_type=Path, dir_okay=False), default=Path("report.html"), show_default=True
)
def report(
    prometheus: str,
    spans: Path | None,
    mounts: tuple[str, ...],
    all_mounts: bool,
    since: int | None,
    rate_window: str | None,
    output: Path,
) -> None:
    """An HTML report of one mount: requests, latency, errors, throughput, faults, throttling, slow sessions."""
    try:
        from .local import report as reporting
    except ModuleNotFoundError as exc:
        if exc.name != "matplotlib":
            raise
        _fail("interposer report needs the 'report' extra (matplotlib): pip install 'cnfs-interposer[report]'")
    from .local.spanlines import SpanFileError

    try:
        built = reporting.build(prometheus, spans, since, rate_window, mounts, all_mounts)
    except (reporting.ReportError, SpanFileError) as exc:
        _fail(str(exc))
    except (OSError, RuntimeError) as exc:
        _fail(f"cannot query {prometheus}: {exc}", FAILURE)
    output.write_text(reporting.render(built))
    click.echo(f"wrote {output} ({built.mounts})")


@main.command()
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(".demo"),
    show_default=True,
    help="Where the sample backing directory and the mountpoint are made.",
)
@_stack_options
def demo(
    workdir: Path, directory: Path, prometheus_port: int, alertmanager_port: int, otlp_port: int, jaeger_port: int
) -> None:
    """Mount a sample directory, start the local stack, run a workload with faults, show its alert, a trace and
    an HTML report, unmount."""
    from .local.demo import run_demo
    from .local.stack import LocalStack

    sys.exit(run_demo(workdir, LocalStack(directory, prometheus_port, alertmanager_port, otlp_port, jaeger_port)))


def _time_ns(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1e9)
    except ValueError:
        _fail(f"'{text}' is not an ISO 8601 time (for example 2026-11-21T10:00:00)")


def _errno_name(_context: click.Context, _parameter: click.Parameter, value: str | None) -> str | None:
    """An errno symbol as spans record it (EWOULDBLOCK is recorded as EAGAIN), or its number if it has none."""
    if value is None:
        return None
    if value.isdigit():
        return errno.errorcode.get(int(value), value)
    code = getattr(errno, value.upper(), None) if value.upper().startswith("E") else None
    if not isinstance(code, int) or code not in errno.errorcode:
        close = difflib.get_close_matches(value.upper(), errno.errorcode.values(), n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise click.BadParameter(
            f"{value!r} is not an errno name{hint}; spell it as errno(3) does, e.g. ENOENT, EIO, EACCES, ENOSPC, "
            "or give its number"
        )
    return errno.errorcode[code]


def _trace_id(_context: click.Context, _parameter: click.Parameter, value: str | None) -> str | None:
    """A trace id as span files record it: 32 hex digits, in lower case."""
    if value is None:
        return None
    if not re.fullmatch("[0-9a-fA-F]{32}", value):
        raise click.BadParameter(f"{value!r} is not a trace id: 32 hex digits, as the report, Jaeger and --tree show")
    return value.lower()


def _list_kept(context: click.Context) -> None:
    """``traces`` with neither SPAN_FILE nor --mount: the span files kept after their mounts."""
    from .local.traces import kept_listing
    from .mount.kept_spans import kept, spans_dir

    for parameter in context.command.params:
        if parameter.name and context.get_parameter_source(parameter.name) is ParameterSource.COMMANDLINE:
            _fail(
                f"{parameter.opts[0]} needs a span file: give SPAN_FILE or --mount MOUNTPOINT "
                "('interposer traces' alone lists the kept ones)"
            )
    files = kept()
    if not files:
        click.echo(f"no span files kept in {spans_dir()}: a mount without tracing.file keeps its spans there")
        return
    click.echo("\n".join(kept_listing(files)))
    click.echo(
        "\nread one with: interposer traces PATH --summary; the latest of a mount: interposer traces --mount "
        "MOUNTPOINT --summary"
    )


def _latest_kept(mountpoint: Path) -> Path:
    """The span file kept from the last mount at ``mountpoint`` (``traces --mount``)."""
    from .mount.kept_spans import latest, spans_dir

    found = latest(mountpoint)
    if found is None:
        _fail(
            f"no span file kept for {os.path.abspath(mountpoint)} in {spans_dir()} ('interposer traces' lists the "
            "kept ones; a mount with tracing.file writes there instead)"
        )
    return found.path


@main.command()
@click.argument("span_file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--mount",
    "mountpoint",
    type=click.Path(path_type=Path, file_okay=False),
    metavar="MOUNTPOINT",
    help="Read the span file kept from the last mount at MOUNTPOINT, instead of SPAN_FILE.",
)
@click.option("--trace", "trace_id", callback=_trace_id, metavar="TRACE_ID", help="Print this one trace as a tree.")
@click.option("--path", "path_glob", help="Glob on file.path, e.g. '/data/*.log'.")
@click.option("--op", "operation", type=click.Choice([op.value for op in OpName]), help="Operation name.")
@click.option("--pid", type=int, help="Calling process id.")
@click.option("--errno", "error_type", callback=_errno_name, help="errno symbol, e.g. ENOENT.")
@click.option("--min-ms", type=click.FloatRange(min=0), help="Only operations at least this slow.")
@click.option("--since", help="Start time, ISO 8601.")
@click.option("--until", help="End time, ISO 8601.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Most spans listed.")
@click.option("--tree", is_flag=True, help="Print each matching span's trace (handle session) as a tree.")
@click.option("--summary", "show_summary", is_flag=True, help="Slowest operations, bytes per path, errors.")
@click.option("--replay", metavar="URL", help="Send the whole file to an OTLP/HTTP endpoint instead.")
@click.pass_context
def traces(
    context: click.Context,
    span_file: Path | None,
    mountpoint: Path | None,
    trace_id: str | None,
    path_glob: str | None,
    operation: str | None,
    pid: int | None,
    error_type: str | None,
    min_ms: float | None,
    since: str | None,
    until: str | None,
    limit: int,
    tree: bool,
    show_summary: bool,
    replay: str | None,
) -> None:
    """Search a local span file (the embedded default exporter's output); with neither SPAN_FILE nor --mount, list
    the span files kept after their mounts."""
    from .local.spanlines import SpanFileError
    from .local.traces import Query, load_spans, render_tree, search, summary

    if mountpoint is not None:
        if span_file is not None:
            _fail("give SPAN_FILE or --mount MOUNTPOINT, not both")
        span_file = _latest_kept(mountpoint)
    elif span_file is None:
        _list_kept(context)
        return
    modes = [flag for flag, on in (("--replay", replay), ("--summary", show_summary), ("--trace", trace_id)) if on]
    if len(modes) > 1:
        _fail(f"{' and '.join(modes)} cannot be combined: choose one")
    if replay is not None:
        from .local.replay import replay_file

        try:
            count = replay_file(span_file, replay)
        except SpanFileError as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail(f"replay to {replay} failed: {exc}", FAILURE)
        click.echo(f"replayed {count} requests to {replay}")
        return
    try:
        spans = load_spans(span_file)
    except SpanFileError as exc:
        _fail(str(exc))
    if show_summary:
        click.echo("\n".join(summary(spans)))
        return
    if trace_id is not None:
        found = render_tree(spans, trace_id)
        if not found:
            _fail(
                f"{span_file} holds no trace {trace_id} (sampled out, or in another span file: 'interposer traces' "
                "lists the kept ones)",
                FAILURE,
            )
        click.echo(f"trace {trace_id}\n" + "\n".join(found))
        return
    query = Query(path_glob, operation, pid, error_type, min_ms, _time_ns(since), _time_ns(until))
    matched = list(search(spans, query))
    if tree:
        seen: list[str] = []
        for span in matched:
            if span.trace_id not in seen and len(seen) < limit:
                seen.append(span.trace_id)
                click.echo(f"trace {span.trace_id}\n" + "\n".join(render_tree(spans, span.trace_id)) + "\n")
        return
    for span in matched[:limit]:
        click.echo(span.line())
    click.echo(f"{len(matched)} matching spans" + (f", first {limit} shown" if len(matched) > limit else ""))


def _host_port(_context: click.Context, _parameter: click.Parameter, value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r}: allowed: HOST:PORT, e.g. 0.0.0.0:9809")
    return host, int(port)


@main.command()
@click.option("--endpoint", required=True, help="gRPC endpoint, unix:///absolute/path/csi.sock.")
@click.option(
    "--node-id",
    envvar=K8S_ENVIRONMENT[RESOURCE_K8S_NODE],
    help=f"This node's id (node mode) [default: ${K8S_ENVIRONMENT[RESOURCE_K8S_NODE]}, else the hostname].",
)
@click.option(
    "--mode",
    type=click.Choice(["node", "controller", "all"]),
    default="all",
    show_default=True,
    help="Services to serve besides Identity: the node DaemonSet runs node, the provisioner's pod controller.",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/var/lib/cnfs-interposer"),
    show_default=True,
    help="Records of published and provisioned volumes, fresh volume directories, interposer logs.",
)
@click.option(
    "--kubelet-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/var/lib/kubelet"),
    show_default=True,
    help="Target paths must lie under it.",
)
@click.option(
    "--host-root",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="Inline volumes may name a backingDir under it; unset: inline volumes get fresh directories only.",
)
@click.option(
    "--volumes-root",
    type=click.Path(path_type=Path, file_okay=False),
    help="Directories of provisioned volumes [default: STATE_DIR/volumes].",
)
@click.option(
    "--publish-timeout", type=click.FloatRange(1, 600), default=30.0, show_default=True, help="Seconds for a mount."
)
@click.option("--max-volumes", type=click.IntRange(0), default=0, help="Volumes per node (0: no limit).")
@click.option("--metrics-address", callback=_host_port, help="Serve the plugin's own metrics at HOST:PORT.")
@click.option(
    "--server-cgroup",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="cgroup v2 directory, outside the plugin's, where each volume's server gets a cgroup of its own.",
)
@click.option(
    "--server-pods",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Run each volume's server in a pod, as this YAML file says (see interposer.csi.pods.PodSettings).",
)
@click.option(
    "--probe-timeout",
    type=click.FloatRange(0.1, 60),
    default=2.0,
    show_default=True,
    help="Seconds NodeGetVolumeStats waits for a mount to answer before it reports the volume abnormal.",
)
@click.option(
    "--watch-interval",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds between the node plugin's own looks at every volume's server: a dead or hung one is logged and "
    "counted within this time, asked or not (0: only when the kubelet or a scrape asks).",
)
@click.option(
    "--live-control/--no-live-control",
    default=True,
    show_default=True,
    help="Apply VolumeExperiments to this node's volumes (node mode; needs the Kubernetes API: in a cluster, "
    "or --kubeconfig).",
)
@click.option(
    "--kubeconfig",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The Kubernetes API for live control and --server-pods, when not in a cluster [default: in-cluster "
    "credentials].",
)
def csi(
    endpoint: str,
    node_id: str | None,
    mode: str,
    state_dir: Path,
    kubelet_dir: Path,
    host_root: Path | None,
    volumes_root: Path | None,
    publish_timeout: float,
    max_volumes: int,
    metrics_address: tuple[str, int] | None,
    server_cgroup: Path | None,
    server_pods: Path | None,
    probe_timeout: float,
    watch_interval: float,
    live_control: bool,
    kubeconfig: Path | None,
) -> None:
    """Serve the CSI driver: Identity, plus Node and/or Controller, on a unix socket."""
    import socket

    from .csi.server import serve, socket_path

    configure_logging("info")
    try:
        socket_path(endpoint)
    except ValueError as exc:
        _fail(str(exc))
    try:
        from .csi.controller import ControllerService
        from .csi.identity import IdentityService
        from .csi.node import NodeRoots, NodeService
        from .csi.plugin import supervisor_for
    except ImportError as exc:
        _fail(f"the CSI protobuf module is missing ({exc}); generate it: python -m interposer.csi.protogen")
    volumes = volumes_root or state_dir / "volumes"
    services: dict[str, object] = {"Identity": IdentityService(serves_controller=mode != "node")}
    node = None
    watch = None
    if mode in ("node", "all"):
        roots = NodeRoots(kubelet=kubelet_dir, host=host_root, volumes=volumes, state=state_dir)
        name = node_id or socket.gethostname()
        try:
            supervisor = supervisor_for(
                name, state_dir, server_cgroup, server_pods, publish_timeout, probe_timeout, kubeconfig
            )
        except ValueError as exc:
            _fail(str(exc))
        node = NodeService(name, roots, supervisor, max_volumes)
        node.adopt()
        services["Node"] = node
        if watch_interval > 0:
            from .csi.watch import Watch

            watch = Watch(node, watch_interval)
        if live_control:
            from .csi.live_control import start

            start(node, kubeconfig)
    if mode in ("controller", "all"):
        services["Controller"] = ControllerService(volumes, state_dir)
    serve(
        endpoint,
        services,
        metrics_address=metrics_address,
        abnormal_volumes=None if node is None else lambda: len(node.abnormal_volumes()),
    )
    if watch is not None:
        watch.stop(timeout=probe_timeout + 5)


main.add_command(volume_server, name="volume-server")
