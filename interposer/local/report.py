"""``interposer report``: one mount's recent I/O as one HTML page, for a user without Grafana.

It covers one mount unless told otherwise: the mount whose span file is
given (its resource names it), the mounts named with ``--mount``, or every
mount with ``--all-mounts``; every query filters by the mount's resource
labels, so a second mount on the machine cannot leak into the charts.  The
page reads like a dashboard: requests, latency quantiles per operation, a
duration heatmap, throughput, errors, faults and throttling when there are
any, and the slowest file sessions as span waterfalls with their trace ids.
"""

from __future__ import annotations

import html
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..names import (
    ATTR_ERROR_TYPE,
    ATTR_TRANSFERRED,
    FAULTS_INJECTED,
    IO_BYTES,
    OPERATION_DURATION,
    RESOURCE_MOUNTPOINT,
    SPAN_ACTIVITY,
    SPAN_DIRECTORY_SESSION,
    SPAN_FILE_SESSION,
    THROTTLE_WAIT,
    prometheus_label,
)
from . import plots, waterfall
from .traces import SpanRecord, load_spans, resource_labels

OPERATION, ERROR_TYPE = OPERATION_DURATION.prometheus_labels
DIRECTION = IO_BYTES.prometheus_labels[0]
FAULT_TYPE = FAULTS_INJECTED.prometheus_labels[0]
LIMIT = THROTTLE_WAIT.prometheus_labels[0]
MOUNT_LABEL = prometheus_label(RESOURCE_MOUNTPOINT)
TOP_OPERATIONS = 8
"""Operations drawn one by one in the request chart; the rest are summed as 'other'."""
TOP_LATENCY = 5
"""Operations whose latency quantiles are drawn."""
QUANTILES = {"p99": 0.99, "p50": 0.5}
"""Latency quantiles drawn, one panel each, the tail first."""
TRACE_ID = re.compile(r"[0-9a-f]{32}")
SESSIONS = 3
"""Slowest file sessions drawn as waterfalls."""


class ReportError(ValueError):
    """The report cannot tell which mount to cover: a usage error, with what to pass instead."""


@dataclass
class Panel:
    """One titled panel: a chart, or HTML (the waterfalls), with a caption saying how to read it."""

    title: str
    caption: str
    chart: plots.Chart | None = None
    body: str = ""


@dataclass
class Report:
    generated: float
    since: float
    prometheus: str
    mounts: str
    """Which mounts the report covers, in words."""
    span_file: Path | None
    panels: list[Panel] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)


class Prometheus:
    """The few HTTP API calls the report makes, over one time window."""

    def __init__(self, url: str, start: float, end: float, step: float) -> None:
        self.url = url.rstrip("/")
        self.start, self.end, self.step = start, end, step

    def _get(self, path: str, parameters: dict[str, Any]) -> Any:
        query = urllib.parse.urlencode(parameters, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as response:
                reply: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code != 400:  # Prometheus's answer to a query it cannot parse (a bad --rate-window)
                raise
            refusal = json.load(exc).get("error")
            raise ReportError(f"Prometheus refused {parameters.get('query', path)}: {refusal}") from None
        if reply.get("status") != "success":
            raise RuntimeError(f"Prometheus refused {parameters}: {reply.get('error')}")
        return reply["data"]

    def range(self, promql: str, label: str) -> list[plots.Series]:
        """A range query's series, each named by its value of ``label``."""
        data = self._get("query_range", {"query": promql, "start": self.start, "end": self.end, "step": self.step})
        return [
            plots.Series(
                item["metric"].get(label, "all"),
                [float(t) for t, _ in item["values"]],
                [float(v) for _, v in item["values"]],
            )
            for item in data["result"]
        ]

    def instant(self, promql: str, label: str) -> list[tuple[str, float]]:
        """An instant query at the end of the window: (value of ``label``, value), largest first."""
        data = self._get("query", {"query": promql, "time": self.end})
        values = [(item["metric"].get(label, ""), float(item["value"][1])) for item in data["result"]]
        return sorted(values, key=lambda pair: -pair[1])

    def mounts(self) -> list[str]:
        """Mountpoints with request series in the window."""
        match = OPERATION_DURATION.series("count")
        values: list[str] = self._get(
            f"label/{MOUNT_LABEL}/values", {"match[]": match, "start": self.start, "end": self.end}
        )
        return values


def _quote(value: str) -> str:
    """A PromQL string literal (its escapes are Go's, which JSON's are a subset of)."""
    return json.dumps(value)


def _selector(*matchers: str) -> str:
    return "{" + ",".join(matcher for matcher in matchers if matcher) + "}"


def choose_mounts(
    prometheus: Prometheus, span_file: Path | None, mounts: tuple[str, ...], all_mounts: bool
) -> tuple[str, str]:
    """The label matchers of the mounts to cover and their description; ``ReportError`` when it is ambiguous."""
    if all_mounts:
        if mounts:
            raise ReportError("--mount and --all-mounts exclude each other")
        return "", "every mount"
    if mounts:
        wanted = [os.path.abspath(mount) for mount in mounts]
        known = prometheus.mounts()
        missing = [mount for mount in wanted if mount not in known]
        if missing:
            raise ReportError(
                f"Prometheus at {prometheus.url} has no series of {', '.join(missing)} in the window; "
                f"mounts it has: {', '.join(known) or 'none'}"
            )
        pattern = "|".join(re.escape(mount) for mount in wanted)
        return f"{MOUNT_LABEL}=~{_quote(pattern)}", ", ".join(wanted)
    if span_file is not None:
        labels = resource_labels(span_file)
        if RESOURCE_MOUNTPOINT not in labels:
            raise ReportError(f"{span_file} holds no spans yet, so its mount is unknown: pass --mount MOUNTPOINT")
        matchers = [f"{prometheus_label(key)}={_quote(value)}" for key, value in labels.items()]
        return ",".join(matchers), labels[RESOURCE_MOUNTPOINT]
    known = prometheus.mounts()
    if len(known) == 1:
        return f"{MOUNT_LABEL}={_quote(known[0])}", known[0]
    if not known:
        raise ReportError(
            f"Prometheus at {prometheus.url} has no interposer requests in the window: is a mount running and "
            "'interposer stack up' scraping it?"
        )
    raise ReportError(
        f"Prometheus at {prometheus.url} has several mounts ({', '.join(known)}): pick one with --spans FILE or "
        "--mount MOUNTPOINT (repeatable), or pass --all-mounts"
    )


def _heatmap(prometheus: Prometheus, mount: str, window: str) -> plots.Chart:
    """Requests/s per duration bucket; Prometheus's buckets are cumulative, so each is the difference."""
    bucket = OPERATION_DURATION.series("bucket")
    series = prometheus.range(f"sum by (le) (rate({bucket}{_selector(mount)}[{window}]))", "le")
    by_bound = sorted(((float(item.label), item) for item in series if item.label != "+Inf"), key=lambda p: p[0])
    if not by_bound:
        return plots.heatmap([], [], [], prometheus.start, prometheus.end)
    times = by_bound[0][1].times
    rows, previous = [], [0.0] * len(times)
    for _, item in by_bound:
        values = dict(zip(item.times, item.values, strict=True))
        current = [values.get(t, 0.0) for t in times]
        rows.append([max(0.0, now - before) for now, before in zip(current, previous, strict=True)])
        previous = current
    return plots.heatmap([bound for bound, _ in by_bound], times, rows, prometheus.start, prometheus.end)


def _request_panels(prometheus: Prometheus, mount: str, window: str, since: float) -> list[Panel]:
    count, bucket = OPERATION_DURATION.series("count"), OPERATION_DURATION.series("bucket")
    busiest = prometheus.instant(
        f"topk({TOP_OPERATIONS}, sum by ({OPERATION}) (increase({count}{_selector(mount)}[{since:.0f}s])))", OPERATION
    )
    top = [name for name, value in busiest if value > 0]
    chosen = f"{OPERATION}=~{_quote('|'.join(top))}" if top else ""
    requests = prometheus.range(f"sum by ({OPERATION}) (rate({count}{_selector(mount, chosen)}[{window}]))", OPERATION)
    requests.sort(key=lambda item: top.index(item.label) if item.label in top else len(top))
    rest = f"{OPERATION}!~{_quote('|'.join(top))}" if top else ""
    for item in prometheus.range(f"sum(rate({count}{_selector(mount, rest)}[{window}]))", OPERATION):
        if any(item.values):
            requests.append(plots.Series(plots.OTHER, item.times, item.values))
    slow = f"{OPERATION}=~{_quote('|'.join(top[:TOP_LATENCY]))}" if top else ""
    latency = {
        name: prometheus.range(
            f"histogram_quantile({quantile}, "
            f"sum by (le, {OPERATION}) (rate({bucket}{_selector(mount, slow)}[{window}])))",
            OPERATION,
        )
        for name, quantile in QUANTILES.items()
    }
    for series in latency.values():
        series.sort(key=lambda item: top.index(item.label) if item.label in top else len(top))
    failed = f'{ERROR_TYPE}!=""'
    start, end = prometheus.start, prometheus.end
    return [
        Panel(
            "Requests per second by operation",
            f"The {len(top)} busiest operations of the window; the rest summed as 'other'.",
            plots.lines(requests, start, end, "requests/s"),
        ),
        *(
            Panel(
                f"{name} latency by operation",
                f"{name} request duration of the {min(len(top), TOP_LATENCY)} busiest operations, log scale.",
                plots.latency(series, start, end),
            )
            for name, series in latency.items()
        ),
        Panel(
            "Request duration heatmap",
            "Requests per second in each duration bucket: darker is more requests.",
            _heatmap(prometheus, mount, window),
        ),
        Panel(
            "Failed requests per second by errno",
            "Requests that ended with an error, by error.type.",
            plots.lines(
                prometheus.range(
                    f"sum by ({ERROR_TYPE}) (rate({count}{_selector(mount, failed)}[{window}]))",
                    ERROR_TYPE,
                ),
                start,
                end,
                "failed requests/s",
            ),
        ),
    ]


def _throughput_panel(prometheus: Prometheus, mount: str, window: str) -> Panel:
    series = prometheus.range(
        f"sum by ({DIRECTION}) (rate({IO_BYTES.series()}{_selector(mount)}[{window}]))", DIRECTION
    )
    return Panel(
        "Throughput",
        "Bytes read and written through the mount per second.",
        plots.byte_rates(series, prometheus.start, prometheus.end),
    )


_WHEN_PRESENT = (
    (
        "Faults injected per second",
        "By fault type, as the fault rules fired.",
        FAULTS_INJECTED.series(),
        FAULT_TYPE,
        "faults/s",
    ),
    (
        "Throttle waits",
        "Seconds requests spent waiting per second, by the limit that held them (1 = always one waiting).",
        THROTTLE_WAIT.series("sum"),
        LIMIT,
        "seconds waited per second",
    ),
)
"""Panels drawn only when the mount had any of it in the window: (title, caption, counter, label, unit)."""


def _optional_panels(prometheus: Prometheus, mount: str, window: str) -> list[Panel]:
    """Faults and throttling, when the mount had any in the window."""
    panels = []
    for title, caption, counter, label, unit in _WHEN_PRESENT:
        series = prometheus.range(f"sum by ({label}) (rate({counter}{_selector(mount)}[{window}])) > 0", label)
        if series:
            panels.append(Panel(title, caption, plots.lines(series, prometheus.start, prometheus.end, unit)))
    return panels


def _waterfall_panel(spans: list[SpanRecord]) -> Panel | None:
    sessions = waterfall.slowest_sessions(spans, SESSIONS)
    if not sessions:
        return None
    return Panel(
        "Slowest file sessions",
        "Each open file's operations on its session's time line; red: failed. "
        "Search a trace with: interposer traces SPANFILE --tree.",
        body="".join(waterfall.render(session) for session in sessions),
    )


def _span_tables(spans: list[SpanRecord], top: int) -> list[tuple[str, list[str], list[list[str]]]]:
    moved: Counter[str] = Counter()
    for span in spans:
        if span.attributes.get(ATTR_TRANSFERRED):
            moved[span.path] += int(span.attributes[ATTR_TRANSFERRED])
    parents = {SPAN_FILE_SESSION, SPAN_DIRECTORY_SESSION, SPAN_ACTIVITY}
    slowest = sorted((s for s in spans if s.name not in parents), key=lambda s: -s.duration_ms)
    return [
        (
            "Paths that moved the most bytes",
            ["path", "bytes"],
            [[path, plots.binary_bytes(count)] for path, count in moved.most_common(top)],
        ),
        (
            "Slowest operations",
            ["duration", "operation", "path", "error", "trace"],
            [
                [
                    plots.human_seconds(s.duration_ms / 1e3),
                    s.operation,
                    s.path,
                    str(s.attributes.get(ATTR_ERROR_TYPE, "")),
                    s.trace_id,
                ]
                for s in slowest[:top]
            ],
        ),
    ]


def build(
    prometheus_url: str,
    span_file: Path | None,
    since: float,
    rate_window: str = "1m",
    mounts: tuple[str, ...] = (),
    all_mounts: bool = False,
    top: int = 15,
) -> Report:
    """Query, plot and tabulate the last ``since`` seconds of the chosen mount(s)."""
    end = time.time()
    prometheus = Prometheus(prometheus_url, end - since, end, max(since / 240, 1.0))
    mount, described = choose_mounts(prometheus, span_file, mounts, all_mounts)
    report = Report(end, since, prometheus.url, described, span_file)
    report.panels = [
        *_request_panels(prometheus, mount, rate_window, since),
        _throughput_panel(prometheus, mount, rate_window),
        *_optional_panels(prometheus, mount, rate_window),
    ]
    if span_file is not None:
        spans = [s for s in load_spans(span_file) if s.start_ns >= prometheus.start * 1e9]
        sessions = _waterfall_panel(spans)
        if sessions is not None:
            report.panels.append(sessions)
        report.tables = _span_tables(spans, top)
    return report


_STYLE = """
body{font-family:sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.5em;margin-bottom:.2em}
.panel{border:1px solid #ddd;border-radius:4px;margin:1em 0;padding:.6em .8em}
.panel h2{font-size:1.1em;margin:0 0 .2em}
.caption{color:#555;font-size:.85em;margin:0 0 .4em}
.panel svg{display:block;width:100%;height:auto}
.empty{color:#a00}
.waterfall{margin:.8em 0}
.waterfall h3{font-size:.9em;font-weight:normal;margin:.3em 0;overflow-wrap:anywhere}
.row{display:flex;align-items:center;height:16px;font-size:12px}
.op{flex:none;width:15em;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.lane{position:relative;flex:1;height:10px;background:#f2f2f2}
.bar{position:absolute;top:0;height:100%;background:#3b7dd8}
.bar.failed{background:#d33}
.note{color:#555;font-size:.8em;margin:.2em 0}
table{border-collapse:collapse;font-size:.85em;width:100%}
td code{white-space:nowrap}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;overflow-wrap:anywhere}
"""


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(moment))


def _panel(panel: Panel) -> str:
    points = panel.chart.points if panel.chart is not None else int(bool(panel.body))
    if panel.chart is not None:
        content = panel.chart.svg if panel.chart.points else "<p class='empty'>no data in the window</p>"
    else:
        content = panel.body
    return (
        f"<section class='panel' data-points='{points}'><h2>{html.escape(panel.title)}</h2>"
        f"<p class='caption'>{html.escape(panel.caption)}</p>{content}</section>"
    )


def _cell(text: str) -> str:
    """A table cell; trace ids in code, unbroken, so they can be copied whole."""
    escaped = html.escape(text)
    return f"<td><code>{escaped}</code></td>" if TRACE_ID.fullmatch(text) else f"<td>{escaped}</td>"


def render(report: Report) -> str:
    """The report as one self-contained HTML page."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>cnfs-interposer report: {html.escape(report.mounts)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>cnfs-interposer report: {html.escape(report.mounts)}</h1>",
        f"<p class='caption'>The {report.since / 60:.0f} minutes up to {_when(report.generated)}"
        f" from <code>{html.escape(report.prometheus)}</code>"
        + (f" and <code>{html.escape(str(report.span_file))}</code>" if report.span_file else "")
        + ".</p>",
    ]
    parts.extend(_panel(panel) for panel in report.panels)
    for title, header, rows in report.tables:
        parts.append(f"<section class='panel'><h2>{html.escape(title)}</h2><table data-rows='{len(rows)}'><tr>")
        parts.extend(f"<th>{html.escape(cell)}</th>" for cell in header)
        parts.append("</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>")
        parts.append("</table></section>")
    parts.append("</body></html>")
    return "\n".join(parts)
