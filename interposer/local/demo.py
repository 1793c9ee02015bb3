"""The embedded demo: mount a sample directory, run a short real workload in it, report, unmount.

It is the first thing a new user runs, so it exercises the paths people care
about (writes, reads back with checksums, renames, links, listings, a failing
call) and says plainly what happened.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import click
from prometheus_client.parser import text_string_to_metric_families

from ..errnos import errno_of, errno_symbol
from ..mount.child import MountProcess
from ..names import ATTR_ERROR_TYPE, IO_BYTES, OPERATION_DURATION
from .traces import load_spans, summary


@dataclass
class WorkloadReport:
    """What the workload did, as seen from the application's side."""

    files_written: int = 0
    bytes_written: int = 0
    bytes_read: int = 0
    checksums_ok: int = 0
    renames: int = 0
    links: int = 0
    entries_listed: int = 0
    expected_errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def run_workload(root: Path) -> WorkloadReport:
    """A short, deterministic mix of data and metadata operations inside ``root``."""
    report = WorkloadReport()
    started = time.monotonic()
    digests = {}
    (root / "logs").mkdir(exist_ok=True)
    for index in range(50):
        payload = hashlib.sha256(str(index).encode()).digest() * (64 * (index + 1))
        path = root / "logs" / f"app-{index:02d}.log"
        path.write_bytes(payload)
        digests[path.name] = hashlib.sha256(payload).hexdigest()
        report.files_written += 1
        report.bytes_written += len(payload)
    for name, digest in digests.items():
        data = (root / "logs" / name).read_bytes()
        report.bytes_read += len(data)
        report.checksums_ok += hashlib.sha256(data).hexdigest() == digest
    (root / "archive").mkdir(exist_ok=True)
    for index in range(0, 50, 5):
        os.rename(root / "logs" / f"app-{index:02d}.log", root / "archive" / f"app-{index:02d}.log")
        report.renames += 1
        os.link(root / "archive" / f"app-{index:02d}.log", root / "archive" / f"app-{index:02d}.keep")
        report.links += 1
    for directory in (root, root / "logs", root / "archive"):
        report.entries_listed += len(os.listdir(directory))
    try:
        (root / "missing.conf").read_text()
    except OSError as exc:
        name = errno_symbol(errno_of(exc))
        report.expected_errors[name] = report.expected_errors.get(name, 0) + 1
    shutil.rmtree(root / "logs")
    report.seconds = time.monotonic() - started
    return report


@dataclass
class MetricsReport:
    """What the mount's Prometheus endpoint said at the end of the run."""

    url: str
    requests: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    bytes: dict[str, float] = field(default_factory=dict)


def scrape(url: str) -> MetricsReport:
    """Read the endpoint once: requests per operation, failures per errno, bytes per direction."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    report = MetricsReport(url)
    operation, error_type = OPERATION_DURATION.prometheus_labels
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == OPERATION_DURATION.series("count") and sample.value:
                key = sample.labels[operation]
                report.requests[key] = report.requests.get(key, 0) + sample.value
                if sample.labels.get(error_type):
                    symbol = sample.labels[error_type]
                    report.errors[symbol] = report.errors.get(symbol, 0) + sample.value
            elif sample.name == IO_BYTES.series():
                report.bytes[sample.labels[IO_BYTES.prometheus_labels[0]]] = sample.value
    return report


def _prepare(workdir: Path) -> tuple[Path, Path]:
    backing, mountpoint = workdir / "backing", workdir / "mnt"
    if backing.exists():
        shutil.rmtree(backing)
    backing.mkdir(parents=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    (backing / "README.txt").write_text("A sample directory served through cnfs-interposer.\n")
    return backing, mountpoint


def run_demo(workdir: Path) -> int:
    """Run the demo end to end; the exit code says whether everything checked out."""
    workdir = workdir.absolute()
    backing, mountpoint = _prepare(workdir)
    log_path, span_file, config = workdir / "interposer.log", workdir / "spans.jsonl", workdir / "demo.yaml"
    span_file.unlink(missing_ok=True)
    config.write_text(f"tracing:\n  file: {span_file}\n  export_delay: 0.2\n")
    click.echo(f"mounting {backing} at {mountpoint} (log: {log_path})")
    with log_path.open("wb") as log, MountProcess(backing, mountpoint, ["--config", str(config)], log=log) as mount:
        metrics_url = mount.status()["metrics_url"]
        click.echo(f"its metrics: {metrics_url} (interposer ctl {mountpoint} status shows it as metrics_url)")
        report = run_workload(mountpoint)
        status = mount.status()
        metrics = scrape(metrics_url)
    archived = sorted(path.name for path in (backing / "archive").iterdir())
    click.echo("\nworkload (through the mount):")
    click.echo(f"  files written     {report.files_written} ({report.bytes_written:,} bytes)")
    click.echo(f"  bytes read back   {report.bytes_read:,}, checksums ok {report.checksums_ok}/{report.files_written}")
    click.echo(f"  renames {report.renames}, hard links {report.links}, entries listed {report.entries_listed}")
    click.echo(f"  expected errors   {report.expected_errors}")
    click.echo(f"  took              {report.seconds * 1000:.0f} ms")
    click.echo("\ninterposer at the end of the run:")
    click.echo(f"  inodes known {status['inodes']}, open files {status['open_files']}, open dirs {status['open_dirs']}")
    click.echo(f"  internal errors {status['internal_errors']}")
    click.echo(f"\nbacking directory now holds archive/ with {len(archived)} entries; unmounted {mountpoint}")
    busiest = sorted(metrics.requests.items(), key=lambda item: -item[1])[:6]
    click.echo(f"\nmetrics ({metrics.url}; the same endpoint Prometheus scrapes):")
    click.echo("  requests          " + ", ".join(f"{name} {count:.0f}" for name, count in busiest))
    click.echo(f"  failed requests   {', '.join(f'{k} {v:.0f}' for k, v in metrics.errors.items()) or 'none'}")
    click.echo(
        f"  bytes             read {metrics.bytes.get('read', 0):,.0f}, written {metrics.bytes.get('write', 0):,.0f}"
    )
    spans = load_spans(span_file)
    click.echo(f"\ntraces ({span_file}; search it with: interposer traces {span_file} --help):")
    click.echo("\n".join("  " + line for line in summary(spans, top=5)))
    healthy = (
        report.checksums_ok == report.files_written
        and status["internal_errors"] == 0
        and status["open_files"] == 0
        and len(archived) == 2 * report.renames
        and any(span.attributes.get(ATTR_ERROR_TYPE) == "ENOENT" for span in spans)
        and metrics.bytes.get("write") == report.bytes_written
        and metrics.errors.get("ENOENT", 0) >= 1
    )
    click.echo("demo " + ("succeeded" if healthy else "FAILED"))
    return 0 if healthy else 1
