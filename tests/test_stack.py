"""The local stack and the HTML report: a user without Grafana sees one mount's I/O on one machine."""

from __future__ import annotations

import html
import itertools
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from interposer.local.report import TOP_OPERATIONS

from .conftest import MountFactory, interposer, require_command, wait_for
from .otlp import free_port
from .prometheus import Prometheus

GEOMETRY_SCRIPT = Path(__file__).with_name("report_geometry.js")
TIME_TICK = re.compile(r"^\d\d:\d\d(:\d\d)?$")
TRACE_ID = re.compile(r"\b[0-9a-f]{32}\b")


def _mount_config(scratch: Path, name: str, extra: str = "") -> Path:
    config = scratch / f"{name}.yaml"
    config.write_text(
        f"metrics: {{exporters: [prometheus], prometheus_port: {free_port()}}}\n"
        f"tracing: {{file: {scratch / name}.jsonl, export_delay: 0.2}}\n" + extra
    )
    return config


def _report(prometheus: Prometheus, output: Path, *selection: str) -> subprocess.CompletedProcess[str]:
    return interposer(
        "report",
        "--prometheus",
        prometheus.url,
        *selection,
        "--since",
        "300",
        "--rate-window",
        "30s",
        "--output",
        str(output),
        timeout=120,
    )


def _geometry(page: Path, scratch: Path) -> dict[str, Any]:
    """Lay the page out in headless Chromium and measure it (tests/report_geometry.js)."""
    chromium = require_command("chromium")
    measured = scratch / "measured.html"
    measured.write_text(page.read_text().replace("</body>", f"<script>{GEOMETRY_SCRIPT.read_text()}</script></body>"))
    rendered = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--window-size=1200,3000",
            "--dump-dom",
            f"file://{measured}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    found = re.search(r'<pre id="geometry">(.*?)</pre>', rendered.stdout, re.S)
    assert found, "the geometry script did not run:\n" + rendered.stdout[-2000:]
    geometry: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return geometry


def _inside(inner: dict[str, float], outer: dict[str, float], slack: float = 1.0) -> bool:
    return (
        inner["left"] >= outer["left"] - slack
        and inner["right"] <= outer["right"] + slack
        and inner["top"] >= outer["top"] - slack
        and inner["bottom"] <= outer["bottom"] + slack
    )


def _check_layout(geometry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Dashboard-like layout: nothing overflows or overlaps, legends beside plots, time axes, titles once."""
    assert geometry["scrollWidth"] <= geometry["viewport"], "the page scrolls sideways"
    panels = geometry["panels"]
    for above, below in itertools.pairwise(panels):
        assert above["box"]["bottom"] <= below["box"]["top"] + 0.5, f"{above['title']} overlaps {below['title']}"
    by_title = {}
    for panel in panels:
        title = panel["title"]
        by_title[title] = panel
        assert geometry["text"].count(title) == 1, f"{title!r} is printed more than once"
        assert title not in panel["svgTexts"], f"{title!r} is repeated inside its chart"
        if panel["svg"] is None:
            continue
        assert _inside(panel["svg"], panel["box"]), f"{title}: the chart spills out of its panel"
        assert panel["xTicks"], f"{title}: the x-axis has no ticks"
        assert all(TIME_TICK.match(tick) for tick in panel["xTicks"]), f"{title}: x is not time: {panel['xTicks']}"
        assert any(text.startswith("time (") for text in panel["svgTexts"]), f"{title}: the time axis has no label"
        if panel["legend"] is not None:
            assert _inside(panel["legend"], panel["svg"]), f"{title}: the legend spills out of the chart"
            assert panel["legend"]["left"] >= panel["plot"]["right"] - 1, f"{title}: the legend covers the data"
            colours = panel["legendColours"]
            assert len(set(colours)) == len(colours), f"{title}: legend colours repeat: {colours}"
    return by_title


@pytest.fixture
def stack(scratch: Path) -> Any:
    ports = {"--prometheus-port": str(free_port()), "--alertmanager-port": str(free_port())}
    command = ["stack", "--dir", str(scratch / "stack"), *(item for pair in ports.items() for item in pair)]
    yield command, Prometheus(f"http://127.0.0.1:{ports['--prometheus-port']}")
    stopped = interposer(*command, "down", timeout=60)
    assert stopped.returncode == 0
    assert "stopped alertmanager, prometheus" in stopped.stdout


def test_the_report_covers_one_mount_and_reads_like_a_dashboard(
    mount_factory: MountFactory, scratch: Path, stack: Any
) -> None:
    command, prometheus = stack
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
    wait_for(lambda: len(prometheus.query("up == 1")) == 2, timeout=60, what="the stack to scrape both mounts")
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
    wait_for(lambda: (prometheus.value("min(timestamp(up))") or 0) > now, timeout=30, what="a scrape after the work")

    ambiguous = _report(prometheus, scratch / "none.html")
    assert ambiguous.returncode == 2
    assert "several mounts" in ambiguous.stderr
    assert str(mount.mountpoint) in ambiguous.stderr
    assert str(other.mountpoint) in ambiguous.stderr

    page = scratch / "report.html"
    made = _report(prometheus, page, "--spans", str(scratch / "faulty.jsonl"))
    assert made.returncode == 0, made.stderr
    assert str(mount.mountpoint) in made.stdout

    panels = _check_layout(_geometry(page, scratch))
    requests = panels["Requests per second by operation"]
    assert "write" in requests["legendTexts"]
    assert "mkdir" not in requests["legendTexts"], "the other mount's requests leak into the report"
    assert 1 <= len(requests["legendTexts"]) <= TOP_OPERATIONS + 1
    assert "write" in panels["p99 latency by operation"]["legendTexts"]
    assert panels["p50 latency by operation"]["points"] > 0
    assert "EIO" in panels["Failed requests per second by errno"]["legendTexts"]
    throughput = panels["Throughput"]
    assert {"read", "write"} <= set(throughput["legendTexts"])
    assert any(re.fullmatch(r"(Ki|Mi|Gi)?B/s", text) for text in throughput["svgTexts"]), "no byte unit"
    assert throughput["yTicks"]
    assert not any(tick.startswith(("-", "\u2212")) for tick in throughput["yTicks"]), "reads drawn below zero"
    plot_edges = {(panel["plot"]["left"], panel["plot"]["right"]) for panel in panels.values() if panel["plot"]}
    assert len(plot_edges) == 1, f"the charts' time axes do not line up: {plot_edges}"
    for title in ("Faults injected per second", "Throttle waits", "Request duration heatmap"):
        assert panels[title]["points"] > 0, f"{title}: no data"
    waterfalls = panels["Slowest file sessions"]["waterfalls"]
    assert waterfalls
    for session in waterfalls:
        assert TRACE_ID.search(session["heading"]), session["heading"]
        assert session["bars"]
        assert all(_inside(item["bar"], item["lane"], slack=0.5) for item in session["bars"])

    bad_window = interposer(
        "report", "--prometheus", prometheus.url, "--all-mounts", "--rate-window", "1 minute", "--output", str(page)
    )
    assert bad_window.returncode == 2
    assert "Prometheus refused" in bad_window.stderr
    assert "[1 minute]" in bad_window.stderr

    theirs = scratch / "other.html"
    assert _report(prometheus, theirs, "--mount", str(other.mountpoint)).returncode == 0
    assert ">mkdir</text>" in theirs.read_text()
