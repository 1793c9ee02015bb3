"""The local stack and the HTML report: a user without Grafana sees one mount's I/O on one machine."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from interposer.local.ports import EPHEMERAL_RANGE, LOWEST, free_port, free_ports
from interposer.local.report import TOP_OPERATIONS
from interposer.local.stack import LocalStack

from .conftest import MountFactory, interposer, wait_for
from .prometheus import Prometheus
from .report_layout import HEADLINE, check_bytes_table, check_layout, check_sessions, geometry, tick_span


def _mount_config(scratch: Path, name: str, extra: str = "") -> Path:
    config = scratch / f"{name}.yaml"
    config.write_text(
        f"metrics: {{exporters: [prometheus], prometheus_port: {free_port()}}}\n"
        f"tracing: {{file: {scratch / name}.jsonl, export_delay: 0.2}}\n" + extra
    )
    return config


def _report(prometheus: Prometheus, output: Path, *selection: str) -> subprocess.CompletedProcess[str]:
    """The report as a user asks for it: the window and the rate window fitted to the data."""
    return interposer("report", "--prometheus", prometheus.url, *selection, "--output", str(output), timeout=120)


@pytest.fixture
def stack(scratch: Path) -> Any:
    ports = {
        option: str(free_port())
        for option in ("--prometheus-port", "--alertmanager-port", "--otlp-port", "--jaeger-port")
    }
    command = ["stack", "--dir", str(scratch / "stack"), *(item for pair in ports.items() for item in pair)]
    yield command, Prometheus(f"http://127.0.0.1:{ports['--prometheus-port']}")
    stopped = interposer(*command, "down", timeout=60)
    assert stopped.returncode == 0
    assert "stopped otelcol, jaeger, prometheus, alertmanager" in stopped.stdout


def test_the_report_covers_one_mount_and_reads_like_a_dashboard(
    mount_factory: MountFactory, scratch: Path, stack: Any
) -> None:
    command, prometheus = stack
    mounts_job = LocalStack(scratch / "stack").mounts_job  # the job the chart's PodMonitor of volume servers makes
    faulty = _mount_config(
        scratch,
        "faulty",
        "faults:\n  rules:\n    - match: {paths: ['/broken'], operations: [open]}\n      action: {errno: EIO}\n"
        "throttle: {write_bytes: {rate: 4194304, burst: 65536}}\n",
    )
    mount = mount_factory(args=["--config", str(faulty)])
    other = mount_factory(args=["--config", str(_mount_config(scratch, "other"))])
    started = interposer(*command, "up", timeout=120)
    assert started.returncode == 0, started.stderr
    assert f"{mount.mountpoint} (127.0.0.1:" in started.stdout
    assert f"{other.mountpoint} (127.0.0.1:" in started.stdout
    wait_for(
        lambda: len(prometheus.query(f'up{{job="{mounts_job}"}} == 1')) == 2,
        timeout=60,
        what="the stack to scrape both mounts",
    )
    rules = prometheus.api("rules")["groups"]
    assert {group["name"] for group in rules} == {"cnfs-interposer.rules", "cnfs-interposer.alerts"}

    (mount.backing / "broken").write_bytes(b"")
    deadline = time.monotonic() + 12  # a few scrapes at the stack's 5 s interval
    while time.monotonic() < deadline:
        with (mount.mountpoint / "log").open("wb") as log:  # one file session of throttled writes
            for _ in range(8):
                log.write(os.urandom(64 << 10))
        assert len((mount.mountpoint / "log").read_bytes()) == 8 * 64 << 10
        with pytest.raises(OSError):  # the fault rule
            (mount.mountpoint / "broken").read_bytes()
        for _ in range(20):  # busier than most of the first mount's operations, which never include it
            (other.mountpoint / "only-here").mkdir()
            (other.mountpoint / "only-here").rmdir()
    now = time.time()
    wait_for(
        lambda: (prometheus.value(f'min(timestamp(up{{job="{mounts_job}"}}))') or 0) > now,
        timeout=30,
        what="a scrape after the work",
    )

    ambiguous = _report(prometheus, scratch / "none.html")
    assert ambiguous.returncode == 2
    assert "several mounts" in ambiguous.stderr
    assert str(mount.mountpoint) in ambiguous.stderr
    assert str(other.mountpoint) in ambiguous.stderr

    page = scratch / "report.html"
    made = _report(prometheus, page, "--spans", str(scratch / "faulty.jsonl"))
    assert made.returncode == 0, made.stderr
    assert str(mount.mountpoint) in made.stdout

    measured = geometry(page, scratch)
    panels = check_layout(measured)
    headline = HEADLINE.match(measured["headline"] or "")
    assert headline, measured["headline"]
    assert re.search(r"\d+ failed \(EIO \d+", measured["headline"]), "the injected EIO is not among the failures"
    requests = panels["Requests per second by operation"]
    assert tick_span(requests["xTicks"]) < timedelta(minutes=3), f"the window does not fit the data: {requests}"
    assert requests["xTicks"][0].count(":") == 2, "a window of a minute or two shows seconds"
    assert "write" in requests["legendTexts"]
    assert "mkdir" not in requests["legendTexts"], "the other mount's requests leak into the report"
    assert "forget" not in requests["legendTexts"], "kernel housekeeping among the workload's requests"
    assert 1 <= len(requests["legendTexts"]) <= TOP_OPERATIONS + 1
    assert measured["housekeeping"].startswith("Kernel housekeeping"), measured["housekeeping"]
    assert "security.capability" in measured["housekeeping"], "the writes' capability probes are not summarised"
    p99 = panels["p99 latency by operation"]
    assert "write" in p99["legendTexts"]
    assert re.fullmatch(r"p99 duration \((µs|ms|s)\)", p99["yLabel"]), p99["yLabel"]
    assert panels["p50 latency by operation"]["points"] > 0
    failed = panels["Failed requests per second by errno"]
    assert "EIO" in failed["legendTexts"]
    assert "ENODATA" not in failed["legendTexts"], "the capability probes are drawn as failures"
    throughput = panels["Throughput"]
    assert {"read", "write"} <= set(throughput["legendTexts"])
    assert re.fullmatch(r"(Ki|Mi|Gi)?B/s", throughput["yLabel"]), "no byte unit"
    assert not any(tick.startswith(("-", "\u2212")) for tick in throughput["yTicks"]), "reads drawn below zero"
    for title in ("Faults injected per second", "Throttle waits", "Request duration heatmap"):
        assert panels[title]["points"] > 0, f"{title}: no data"
    check_sessions(panels["Slowest file sessions"], scratch / "faulty.jsonl")
    assert any(" x" in row for s in panels["Slowest file sessions"]["waterfalls"] for row in s["rows"]), (
        "the session's writes are not collapsed into one row"
    )
    check_bytes_table(panels["Paths that moved the most bytes"])
    slowest = panels["Slowest operations"]["table"][1:]
    assert slowest
    assert not any(row[1] == "forget" or row[1:4:2] == ["getxattr", "ENODATA"] for row in slowest), slowest

    bad_window = interposer(
        "report", "--prometheus", prometheus.url, "--all-mounts", "--rate-window", "1 minute", "--output", str(page)
    )
    assert bad_window.returncode == 2
    assert "Prometheus refused" in bad_window.stderr
    assert "[1 minute]" in bad_window.stderr

    theirs = scratch / "other.html"
    assert _report(prometheus, theirs, "--mount", str(other.mountpoint)).returncode == 0
    assert ">mkdir</text>" in theirs.read_text()
    quiet = check_layout(geometry(theirs, scratch))
    for title in ("Throughput", "Faults injected per second", "Throttle waits", "Failed requests per second by errno"):
        assert quiet[title]["empty"], f"{title}: the other mount had none, yet the section is drawn"


def test_the_report_says_how_to_start_prometheus_when_none_answers(scratch: Path) -> None:
    made = interposer(
        "report", "--prometheus", f"http://127.0.0.1:{free_port()}", "--output", str(scratch / "report.html")
    )
    assert made.returncode == 1
    assert "no Prometheus answers there" in made.stderr
    assert "interposer stack up" in made.stderr
    assert "Traceback" not in made.stderr
    assert not (scratch / "report.html").exists()


def test_free_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    """The local stack's dozen internal ports: never two alike, none that an outgoing connection could take before
    its server binds it (the kernel gives connections ports from the ephemeral range only)."""
    ports = free_ports(64)
    assert len(set(ports)) == len(ports)
    ephemeral_low = int(EPHEMERAL_RANGE.read_text().split()[0])
    assert all(LOWEST <= port < ephemeral_low for port in ports), ports
    with ExitStack() as held:
        for port in ports:
            held.enter_context(socket.socket()).bind(("127.0.0.1", port))  # each still free
