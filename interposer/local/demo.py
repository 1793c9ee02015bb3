"""The embedded demo: the whole one-machine experience, with no step of the user's own.

It is the first thing a new user runs, so it shows everything the project
offers on one machine: it mounts a sample directory, starts the local stack
(Prometheus and Alertmanager with the generated alert rules), runs a real
workload in rounds (writes, reads back with checksums, renames, links,
listings, a missing file) with faults injected (failed opens, slow fsyncs),
and keeps it running until Prometheus holds its data and the alert that the
faults fire is firing in Alertmanager, polling both with a deadline.  Then it
unmounts and prints what happened: the workload's view, the metrics, the
fired alert, one trace with an injected fault, and the path of an HTML report
with the plots and the span waterfalls.  Without the stack it says why and
what to do, and still prints the rest and writes the report's span parts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from prometheus_client.parser import text_string_to_metric_families

from ..errnos import errno_of, errno_symbol
from ..mount.child import MountProcess
from ..names import (
    ATTR_ERROR_TYPE,
    ATTR_IO_DIRECTION,
    ATTR_OPERATION,
    EVENT_FAULT,
    IO_BYTES,
    OPERATION_DURATION,
    RESOURCE_MOUNTPOINT,
    SPAN_FILE_SESSION,
    is_expected_failure,
    prometheus_label,
)
from .prometheus import Prometheus, PrometheusUnavailableError
from .stack import LocalStack, StackError
from .traces import SpanRecord, load_spans, render_tree

FAULTS = """\
faults:
  seed: 7
  rules:
    - name: flaky-reports
      match: {operations: [open], paths: ["/reports/*"], every_nth: 2}
      action: {errno: EIO}
    - name: slow-fsync
      match: {operations: [fsync], paths: ["/logs/*"]}
      action: {latency: {kind: uniform, low: 0.005, high: 0.03}}
"""
"""What the demo breaks on purpose: every second open of a report fails, and fsyncs of logs are slow."""
FAULTS_IN_WORDS = "every 2nd open of /reports/* fails with EIO, fsync of /logs/* is delayed 5 to 30 ms"
ALERT = "CnfsInterposerFaultInjectionActive"
"""The generated rule (alerts/rules.py) that the injected faults fire at once (its ``for`` is 0m)."""
MIN_RUN = 40.0
"""Seconds the workload runs at least, so the charts have a shape over several scrapes."""
ROUND = 2.0
"""Seconds between the starts of two rounds of the workload."""
DEADLINE = 90.0
"""Seconds the demo waits at most for Prometheus's data and the alert."""
SCRAPE_DEADLINE = 20.0
"""Seconds past ``DEADLINE`` allowed for Prometheus's scrape of the last round."""
POLL = 0.5
"""Seconds between two questions to Prometheus."""
TREE_LINES = 12
"""Lines of the trace printed; the rest is one command away."""
MOUNT_LABEL = prometheus_label(RESOURCE_MOUNTPOINT)
OPERATION_LABEL = OPERATION_DURATION.label(ATTR_OPERATION)
JAEGER_DEADLINE = 30.0
"""Seconds for a replayed trace to show in Jaeger's query API: the collector batches for 1 s."""


@dataclass
class WorkloadReport:
    """What the workload did, as seen from the application's side."""

    rounds: int = 0
    files_written: int = 0
    bytes_written: int = 0
    bytes_read: int = 0
    checksums_ok: int = 0
    renames: int = 0
    links: int = 0
    entries_listed: int = 0
    expected_errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def _failed(report: WorkloadReport, exc: OSError) -> None:
    report.expected_errors[errno_symbol(errno_of(exc))] += 1


def run_workload(root: Path, report: WorkloadReport | None = None) -> WorkloadReport:
    """One round of a short, deterministic mix of data and metadata operations inside ``root``."""
    report = report or WorkloadReport()
    started = time.monotonic()
    tag = f"r{report.rounds:02d}"
    digests = {}
    (root / "logs").mkdir(exist_ok=True)
    for index in range(50):
        payload = hashlib.sha256(str(index).encode()).digest() * (16 * (index + 1))
        path = root / "logs" / f"app-{index:02d}.log"
        with path.open("wb") as handle:
            handle.write(payload)
            if index % 5 == 0:
                os.fsync(handle.fileno())
        digests[path.name] = hashlib.sha256(payload).hexdigest()
        report.files_written += 1
        report.bytes_written += len(payload)
    for name, digest in digests.items():
        data = (root / "logs" / name).read_bytes()
        report.bytes_read += len(data)
        report.checksums_ok += hashlib.sha256(data).hexdigest() == digest
    (root / "archive").mkdir(exist_ok=True)
    for index in range(0, 50, 5):
        kept = root / "archive" / f"{tag}-app-{index:02d}.log"
        os.rename(root / "logs" / f"app-{index:02d}.log", kept)
        report.renames += 1
        os.link(kept, kept.with_suffix(".keep"))
        report.links += 1
    for directory in (root, root / "logs", root / "archive"):
        report.entries_listed += len(os.listdir(directory))
    try:
        (root / "missing.conf").read_text()
    except OSError as exc:
        _failed(report, exc)
    (root / "reports").mkdir(exist_ok=True)
    summary = root / "reports" / f"{tag}.csv"
    report.bytes_written += summary.write_bytes(f"round,files\n{report.rounds},{report.files_written}\n".encode())
    for _ in range(2):
        try:
            summary.read_text()
        except OSError as exc:  # the fault rule, when the demo injects faults
            _failed(report, exc)
    shutil.rmtree(root / "logs")
    report.rounds += 1
    report.seconds += time.monotonic() - started
    return report


@dataclass
class MetricsReport:
    """What the mount's Prometheus endpoint said at the end of the run."""

    url: str
    requests: dict[str, float] = field(default_factory=dict)
    errors: dict[tuple[str, str], float] = field(default_factory=dict)
    """Failed requests per (operation, error type)."""
    bytes: dict[str, float] = field(default_factory=dict)

    def failures(self, expected: bool) -> str:
        """The failures that are trouble, or the expected answers (names.EXPECTED_FAILURES), in words."""
        chosen = sorted(
            ((pair, count) for pair, count in self.errors.items() if is_expected_failure(*pair) == expected),
            key=lambda item: -item[1],
        )
        return ", ".join(f"{op} {error} {count:.0f}" for (op, error), count in chosen) or "none"


def scrape(url: str) -> MetricsReport:
    """Read the endpoint once: requests per operation, failures per errno, bytes per direction."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    report = MetricsReport(url)
    operation = OPERATION_LABEL
    error_type = OPERATION_DURATION.label(ATTR_ERROR_TYPE)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == OPERATION_DURATION.series("count") and sample.value:
                key = sample.labels[operation]
                report.requests[key] = report.requests.get(key, 0) + sample.value
                if sample.labels.get(error_type):
                    failure = key, sample.labels[error_type]
                    report.errors[failure] = report.errors.get(failure, 0) + sample.value
            elif sample.name == IO_BYTES.series():
                report.bytes[sample.labels[IO_BYTES.label(ATTR_IO_DIRECTION)]] = sample.value
    return report


def _prepare(workdir: Path) -> tuple[Path, Path]:
    backing, mountpoint = workdir / "backing", workdir / "mnt"
    if backing.exists():
        shutil.rmtree(backing)
    backing.mkdir(parents=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    (backing / "README.txt").write_text("A sample directory served through cnfs-interposer.\n")
    return backing, mountpoint


def _firing(stack: LocalStack, mountpoint: Path) -> dict[str, Any] | None:
    """The faults' alert for this mount, if Alertmanager holds it active."""
    alerts = [a for a in stack.active_alerts(ALERT) if a["labels"].get(MOUNT_LABEL) == str(mountpoint)]
    return alerts[0] if alerts else None


def _scraped_after(stack: LocalStack, mountpoint: Path, moment: float) -> bool:
    """Whether Prometheus holds a sample of the mount's requests taken after ``moment``."""
    now = time.time()
    selector = f"{OPERATION_DURATION.series('count')}{{{MOUNT_LABEL}={json.dumps(str(mountpoint))}}}"
    latest = Prometheus(stack.prometheus_url, now, now, 1.0).scalar(f"max(timestamp({selector}))")
    return latest is not None and latest > moment


def _run_observed(stack: LocalStack, mountpoint: Path) -> tuple[WorkloadReport, dict[str, Any] | None]:
    """Rounds of the workload, one every ``ROUND`` seconds, until the faults' alert fires (or the deadline),
    then until Prometheus has scraped the last round."""
    report, alert = WorkloadReport(), None
    started = time.monotonic()
    deadline, next_progress = started + DEADLINE, started + 10
    while True:
        round_started = time.monotonic()
        run_workload(mountpoint, report)
        alert = alert or _firing(stack, mountpoint)
        now = time.monotonic()
        if (alert is not None and now - started >= MIN_RUN) or now >= deadline:
            break
        if now >= next_progress:
            waiting = f"the alert {ALERT}" if alert is None else f"{MIN_RUN:.0f} s of data"
            click.echo(f"  {now - started:.0f} s: {report.rounds} rounds; waiting for {waiting}")
            next_progress += 10
        time.sleep(max(0.0, round_started + ROUND - time.monotonic()))  # the workload's pace, not a wait for state
    finished = time.time()
    while not _scraped_after(stack, mountpoint, finished) and time.monotonic() < deadline + SCRAPE_DEADLINE:
        time.sleep(POLL)
    return report, alert


def _fault_trace(spans: list[SpanRecord]) -> str | None:
    """A file session with an injected fault in it (a slowed fsync), else any trace with one."""
    faulted = [span for span in spans if EVENT_FAULT in span.events]
    sessions = {span.trace_id for span in spans if span.name == SPAN_FILE_SESSION}
    chosen = next((span for span in faulted if span.trace_id in sessions), faulted[0] if faulted else None)
    return None if chosen is None else chosen.trace_id


def _print_alert(stack: LocalStack, alert: dict[str, Any] | None) -> None:
    if alert is None:
        click.echo(f"\nalert: {ALERT} did not reach Alertmanager ({stack.alertmanager_url}) within {DEADLINE:.0f} s")
        return
    labels, annotations = alert["labels"], alert.get("annotations", {})
    click.echo(f"\nalert firing in Alertmanager ({stack.alertmanager_url}):")
    click.echo(f"  {labels['alertname']} [{labels.get('severity', '')}] since {alert.get('startsAt', '')}")
    for key in ("summary", "description", "runbook_url"):
        if annotations.get(key):
            click.echo(f"  {annotations[key]}")


def _print_trace(spans: list[SpanRecord], span_file: Path) -> None:
    trace = _fault_trace(spans)
    if trace is None:
        click.echo(f"\nno trace with an injected fault in {span_file}")
        return
    lines = render_tree(spans, trace)
    click.echo(f"\na trace with an injected fault (all of it: interposer traces {span_file} --trace {trace}):")
    click.echo("\n".join("  " + line for line in lines[:TREE_LINES]))
    if len(lines) > TREE_LINES:
        click.echo(f"  ... {len(lines) - TREE_LINES} more spans")


def _trace_in_jaeger(stack: LocalStack, span_file: Path, spans: list[SpanRecord]) -> bool:
    """Send the span file to the stack's collector, as ``interposer traces FILE --replay`` does, and show the
    fault's trace as Jaeger's query API returns it; whether Jaeger had it, whole, before the deadline."""
    from .replay import replay_file

    trace = _fault_trace(spans)
    if trace is None:
        return False
    try:
        replay_file(span_file, stack.otlp_http_endpoint)
    except OSError as exc:
        click.echo(f"\nJaeger: the span file could not be sent to the collector ({stack.otlp_http_endpoint}): {exc}")
        return False
    expected = sum(1 for span in spans if span.trace_id == trace)
    deadline = time.monotonic() + JAEGER_DEADLINE
    found = stack.jaeger_trace(trace)
    while (found is None or len(found["spans"]) < expected) and time.monotonic() < deadline:
        time.sleep(POLL)
        found = stack.jaeger_trace(trace)
    if found is None or len(found["spans"]) < expected:
        click.echo(f"\nJaeger ({stack.jaeger_url}) did not have trace {trace} within {JAEGER_DEADLINE:.0f} s")
        return False
    operations = sorted({span["operationName"] for span in found["spans"]})
    click.echo(f"\nthe same trace, found through Jaeger's query API: {stack.jaeger_url}/api/traces/{trace}")
    click.echo(f"  {len(found['spans'])} spans: {', '.join(operations[:8])}{' ...' if len(operations) > 8 else ''}")
    return True


def _query_answered(stack: LocalStack, mountpoint: Path) -> bool:
    """Ask Prometheus what the mount did, by operation, as a panel would; whether it answered."""
    selector = f"{OPERATION_DURATION.series('count')}{{{MOUNT_LABEL}={json.dumps(str(mountpoint))}}}"
    query = f"sort_desc(sum by ({OPERATION_LABEL}) (max_over_time({selector}[10m])))"
    now = time.time()
    answer = Prometheus(stack.prometheus_url, now, now, 1.0).instant(query, OPERATION_LABEL)
    click.echo(f"\nPrometheus ({stack.prometheus_url}) answers: {query}")
    for (operation,), value in answer[:6]:
        click.echo(f"  {operation:<12} {value:.0f}")
    return bool(answer)


def _write_report(workdir: Path, stack: LocalStack | None, span_file: Path, start: float, notice: str) -> Path:
    """The HTML report of the run since ``start`` (an earlier demo's data on the same mountpoint is left out):
    charts and spans from the stack, or, without one, the span parts alone with ``notice`` saying why."""
    from . import report as reporting  # matplotlib: only when a report is drawn

    output = workdir / "report.html"
    if stack is None:
        built = reporting.build_from_spans(span_file, notice)
    else:
        built = reporting.build(stack.prometheus_url, span_file, lookback=time.time() - start)
    output.write_text(reporting.render(built))
    return output


def run_demo(workdir: Path, stack: LocalStack) -> int:
    """Run the demo end to end; the exit code says whether everything checked out."""
    workdir = workdir.absolute()
    backing, mountpoint = _prepare(workdir)
    log_path, span_file, config = workdir / "interposer.log", workdir / "spans.jsonl", workdir / "demo.yaml"
    span_file.unlink(missing_ok=True)
    config.write_text(f"tracing:\n  file: {span_file}\n  export_delay: 0.2\n{FAULTS}")
    click.echo(f"mounting {backing} at {mountpoint} (log: {log_path})")
    started = time.time()
    stack_problem = ""
    alert = None
    with log_path.open("wb") as log, MountProcess(backing, mountpoint, ["--config", str(config)], log=log) as mount:
        metrics_url = mount.status()["metrics_url"]
        click.echo(f"its metrics: {metrics_url} (interposer ctl {mountpoint} status shows it as metrics_url)")
        try:
            stack.up()
        except (StackError, OSError) as exc:
            stack_problem = str(exc)
        if stack_problem:
            click.echo(f"\nthe local stack did not start: {stack_problem}")
            click.echo(
                "what to do: fix that (./tasks.sh demo installs what the stack runs; --dir and the --*-port "
                "options give the demo a stack of its own), then run the demo again; it goes on without charts "
                "or alerts"
            )
            report = run_workload(mountpoint)
        else:
            click.echo(f"local stack: Prometheus {stack.prometheus_url}, Alertmanager {stack.alertmanager_url}")
            click.echo(
                f"running the workload with faults injected ({FAULTS_IN_WORDS}) until Prometheus has its data "
                f"and the alert fires (at least {MIN_RUN:.0f} s, at most {DEADLINE:.0f} s)"
            )
            try:
                report, alert = _run_observed(stack, mountpoint)
            except PrometheusUnavailableError as exc:
                stack_problem = f"Prometheus stopped answering: {exc}"
                report = WorkloadReport()
        status = mount.status()
        metrics = scrape(metrics_url)
    if not stack_problem:
        stack.refresh_targets()  # the mount is gone: stop scraping it, or CnfsInterposerDown fires later
    archived = sorted(path.name for path in (backing / "archive").iterdir())
    click.echo("\nworkload (through the mount):")
    click.echo(f"  rounds            {report.rounds}, {report.seconds:.1f} s of I/O")
    click.echo(f"  files written     {report.files_written} ({report.bytes_written:,} bytes)")
    click.echo(f"  bytes read back   {report.bytes_read:,}, checksums ok {report.checksums_ok}/{report.files_written}")
    click.echo(f"  renames {report.renames}, hard links {report.links}, entries listed {report.entries_listed}")
    errors = ", ".join(f"{name} {count}" for name, count in report.expected_errors.most_common()) or "none"
    click.echo(f"  errors seen       {errors} (ENOENT: a missing file; EIO: the injected faults)")
    click.echo("\ninterposer at the end of the run:")
    click.echo(f"  inodes known {status['inodes']}, open files {status['open_files']}, open dirs {status['open_dirs']}")
    click.echo(f"  internal errors {status['internal_errors']}")
    click.echo(f"\nbacking directory now holds archive/ with {len(archived)} entries; unmounted {mountpoint}")
    busiest = sorted(metrics.requests.items(), key=lambda item: -item[1])[:6]
    click.echo(f"\nmetrics ({metrics.url}; the same endpoint Prometheus scrapes):")
    click.echo("  requests          " + ", ".join(f"{name} {count:.0f}" for name, count in busiest))
    click.echo(f"  failed requests   {metrics.failures(expected=False)}")
    click.echo(f"  expected answers  {metrics.failures(expected=True)} (not trouble: names.EXPECTED_FAILURES)")
    click.echo(
        f"  bytes             read {metrics.bytes.get('read', 0):,.0f}, written {metrics.bytes.get('write', 0):,.0f}"
    )
    if not stack_problem:
        _print_alert(stack, alert)
    spans = load_spans(span_file)
    _print_trace(spans, span_file)
    in_jaeger = answered = False
    if not stack_problem:
        in_jaeger = _trace_in_jaeger(stack, span_file, spans)
        answered = _query_answered(stack, mountpoint)
    notice = f"No charts: the local stack did not start ({stack_problem})." if stack_problem else ""
    output = _write_report(workdir, None if stack_problem else stack, span_file, started - 5, notice)
    if not stack_problem:
        click.echo(
            f"\nPrometheus ({stack.prometheus_url}), Alertmanager ({stack.alertmanager_url}) and Jaeger "
            f"({stack.jaeger_url}) keep running for a look around; stop them with: "
            f"interposer stack --dir {stack.directory} down"
        )
    healthy = (
        not stack_problem
        and alert is not None
        and in_jaeger
        and answered
        and report.checksums_ok == report.files_written
        and status["internal_errors"] == 0
        and status["open_files"] == 0
        and len(archived) == 2 * report.renames
        and any(span.attributes.get(ATTR_ERROR_TYPE) == "ENOENT" for span in spans)
        and metrics.bytes.get("write") == report.bytes_written
        and metrics.errors.get(("lookup", "ENOENT"), 0) >= 1
        and report.expected_errors["EIO"] >= 1
    )
    click.echo("\ndemo " + ("succeeded" if healthy else "FAILED"))
    click.echo(f"the report to open: {output}")
    return 0 if healthy else 1
