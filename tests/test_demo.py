"""The demo shows the whole one-machine experience with no step of the user's own: the stack, a workload with
faults, the alert they fire, a trace, and an HTML report with the plots inline; without the stack, it says why."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from interposer.local.demo import ALERT
from interposer.local.ports import free_port
from interposer.mount.table import mount_at

from .conftest import interposer, require_fuse
from .report_layout import HEADLINE, check_layout, check_sessions, geometry

REPORT_LINE = re.compile(r"^the report to open: (/\S+\.html)$", re.M)


@pytest.fixture
def stack_options(scratch: Path) -> Iterator[list[str]]:
    """A stack of the test's own (state directory and ports), stopped afterwards whatever the demo left running."""
    options = [
        "--dir",
        str(scratch / "stack"),
        "--prometheus-port",
        str(free_port()),
        "--alertmanager-port",
        str(free_port()),
        "--otlp-port",
        str(free_port()),
        "--jaeger-port",
        str(free_port()),
    ]
    yield options
    stopped = interposer("stack", *options, "down", timeout=60)
    assert stopped.returncode == 0, stopped.stderr


def _demo(scratch: Path, stack_options: list[str]) -> tuple[str, float]:
    require_fuse()
    started = time.monotonic()
    ran = interposer("demo", "--workdir", str(scratch / "demo"), *stack_options, timeout=240)
    output = ran.stdout + ran.stderr
    return output, time.monotonic() - started


def test_the_demo_shows_the_alert_a_trace_and_a_report_with_plots(scratch: Path, stack_options: list[str]) -> None:
    output, seconds = _demo(scratch, stack_options)
    assert "demo succeeded" in output, output
    assert seconds < 120, f"the demo took {seconds:.0f} s"
    checked = re.search(r"checksums ok (\d+)/(\d+)", output)
    assert checked, output
    assert checked.group(1) == checked.group(2) != "0", "data read back differs from what was written"
    assert re.search(r"its metrics: http://127\.0\.0\.1:\d+/metrics \(interposer ctl .* status", output), output
    assert mount_at(scratch / "demo" / "mnt") is None, "the demo left its mount behind"

    alert = output.index("alert firing in Alertmanager")
    assert ALERT in output[alert:], output
    assert str(scratch / "demo" / "mnt") in output[alert:].splitlines()[2], "the alert is not about the demo's mount"
    trace = re.search(r"with an injected fault \(all of it: interposer traces (\S+) --trace ([0-9a-f]{32})\)", output)
    assert trace, output
    assert "event=fuse.fault.injected" in output[trace.end() :]
    shown = interposer("traces", trace.group(1), "--trace", trace.group(2))
    assert shown.returncode == 0, shown.stderr
    assert "event=fuse.fault.injected" in shown.stdout, "the printed command does not show the trace"
    jaeger = re.search(
        r"the same trace, found through Jaeger's query API: (http://127\.0\.0\.1:\d+)/api/traces/(\w+)", output
    )
    assert jaeger, output
    assert jaeger.group(2) == trace.group(2), "Jaeger was asked for another trace than the one shown"
    assert re.search(r"\n  (\d+) spans: ", output[jaeger.end() :]), output
    answered = re.search(r"Prometheus \(\S+\) answers: .*\n  (\w+) +(\d+)\n", output)
    assert answered, output
    assert int(answered.group(2)) > 0, "Prometheus answered with no requests"
    assert "{'" not in output, "a raw Python dict is printed"
    assert f"stop them with: interposer stack --dir {scratch / 'stack'} down" in output

    last = output.rstrip().splitlines()[-1]
    found = REPORT_LINE.match(last)
    assert found, f"the demo does not end with the report's path: {last!r}"
    page = Path(found.group(1))
    text = page.read_text()
    assert "<svg" in text
    assert not re.search(r"(src|href)=[\"']?http", text), "the report is not self-contained"

    measured = geometry(page, scratch)
    panels = check_layout(measured)
    assert HEADLINE.match(measured["headline"] or ""), measured["headline"]
    for title in (
        "Requests per second by operation",
        "p99 latency by operation",
        "p50 latency by operation",
        "Request duration heatmap",
        "Failed requests per second by errno",
        "Throughput",
        "Faults injected per second",
    ):
        assert panels[title]["points"] > 0, f"{title}: no data in the demo's report"
    assert "EIO" in panels["Failed requests per second by errno"]["legendTexts"]
    assert panels["Throttle waits"]["empty"], "the demo throttles nothing, yet the section is drawn"
    check_sessions(panels["Slowest file sessions"], Path(trace.group(1)))
    assert any(
        "injected" in row for session in panels["Slowest file sessions"]["waterfalls"] for row in session["rows"]
    ), "the slowed fsyncs are not marked as injected"


class _Impostor(BaseHTTPRequestHandler):
    """Another program on the stack's port that answers 200 to everything, as another stack's Prometheus would."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def test_without_the_stack_the_demo_says_why_and_still_reports_its_spans(
    scratch: Path, stack_options: list[str]
) -> None:
    port = int(stack_options[stack_options.index("--prometheus-port") + 1])
    with ThreadingHTTPServer(("127.0.0.1", port), _Impostor) as impostor:
        threading.Thread(target=impostor.serve_forever, daemon=True).start()
        try:
            output, _ = _demo(scratch, stack_options)
        finally:
            impostor.shutdown()
    assert "the local stack did not start: something else already answers at" in output, output
    assert "what to do:" in output
    assert "workload (through the mount):" in output
    assert "a trace with an injected fault" in output
    assert "demo FAILED" in output
    found = REPORT_LINE.search(output)
    assert found, output
    measured = geometry(Path(found.group(1)), scratch)
    panels = check_layout(measured)
    assert "No charts: the local stack did not start" in (measured["notice"] or "")
    assert panels["Slowest file sessions"]["waterfalls"]
    assert "Requests per second by operation" not in panels
