"""The local stack and the HTML report: a user without Grafana sees I/O on one machine."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import MountFactory, interposer, require_command, wait_for
from .otlp import free_port
from .prometheus import Prometheus


def test_stack_scrapes_the_mount_and_the_report_renders_in_chromium(mount_factory: MountFactory, scratch: Path) -> None:
    span_file = scratch / "spans.jsonl"
    config = scratch / "config.yaml"
    config.write_text(
        f"metrics: {{exporters: [prometheus], prometheus_port: {free_port()}}}\n"
        f"tracing: {{file: {span_file}, export_delay: 0.2}}\n"
        "faults:\n  rules:\n    - match: {paths: ['/broken'], operations: [open]}\n      action: {errno: EIO}\n"
    )
    mount = mount_factory(args=["--config", str(config)])
    ports = {"--prometheus-port": str(free_port()), "--alertmanager-port": str(free_port())}
    stack = ["stack", "--dir", str(scratch / "stack"), *(item for pair in ports.items() for item in pair)]
    started = interposer(*stack, "up", timeout=120)
    try:
        assert started.returncode == 0, started.stderr
        assert f"{mount.mountpoint} (127.0.0.1:" in started.stdout
        prometheus = Prometheus(f"http://127.0.0.1:{ports['--prometheus-port']}")
        wait_for(lambda: bool(prometheus.query("up == 1")), timeout=60, what="the stack to scrape the mount")
        (mount.backing / "broken").write_bytes(b"")
        deadline = time.monotonic() + 12  # a few scrapes at the stack's 5 s interval
        while time.monotonic() < deadline:
            (mount.mountpoint / "log").write_bytes(os.urandom(64 << 10))
            assert len((mount.mountpoint / "log").read_bytes()) == 64 << 10
            with pytest.raises(OSError):  # the fault rule: organic-looking EIO for the report
                (mount.mountpoint / "broken").read_bytes()
        now = time.time()
        wait_for(
            lambda: (prometheus.value("max(timestamp(up))") or 0) > now, timeout=30, what="a scrape after the work"
        )
        rules = prometheus.api("rules")["groups"]
        assert {group["name"] for group in rules} == {"cnfs-interposer.rules", "cnfs-interposer.alerts"}

        report = scratch / "report.html"
        made = interposer(
            "report",
            "--prometheus",
            prometheus.url,
            "--spans",
            str(span_file),
            "--since",
            "300",
            "--rate-window",
            "30s",
            "--output",
            str(report),
        )
        assert made.returncode == 0, made.stderr
        page = report.read_text()
        points = [int(value) for value in re.findall(r"<figure data-points='(\d+)'>", page)]
        assert len(points) == 4
        assert all(points), f"plots without data: {points}"
        assert "EIO" in page
        assert "/log" in page  # a top path

        chromium = require_command("chromium")
        screenshot = scratch / "report.png"
        rendered = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--enable-logging=stderr",
                "--window-size=1200,2400",
                f"--screenshot={screenshot}",
                f"file://{report}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert rendered.returncode == 0, rendered.stderr[-2000:]
        assert "CONSOLE" not in rendered.stderr, rendered.stderr[-2000:]
        image = screenshot.read_bytes()
        assert image.startswith(b"\x89PNG")
        assert len(image) > 20_000, "the screenshot is nearly blank"
    finally:
        stopped = interposer(*stack, "down", timeout=60)
    assert stopped.returncode == 0
    assert "stopped alertmanager, prometheus" in stopped.stdout
