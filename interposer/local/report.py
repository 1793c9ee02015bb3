"""``interposer report``: one mount's I/O as one HTML page, for a user without Grafana.

It covers one mount unless told otherwise: the mount whose span file is
given (its resource names it), the mounts named with ``--mount``, or every
mount with ``--all-mounts``; every query filters by the mount's resource
labels, so a second mount on the machine cannot leak into the charts.  The
page reads like a dashboard: a headline (requests, failures, bytes, time
span), requests, latency quantiles per operation, a duration heatmap,
throughput, errors, faults and throttling, and the slowest file sessions as
span waterfalls with their trace ids.  The window fits the data
(``window.py``), and the kernel's own housekeeping (``housekeeping.py``) is
counted in one line, apart from the workload's operations.
"""

from __future__ import annotations

import html
import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..names import (
    ATTR_ERROR_TYPE,
    ATTR_FAULT,
    ATTR_IO_DIRECTION,
    ATTR_OPERATION,
    ATTR_THROTTLE_LIMIT,
    ATTR_TRANSFERRED,
    FAULTS_INJECTED,
    IO_BYTES,
    OPERATION_DURATION,
    RESOURCE_MOUNTPOINT,
    SPAN_ACTIVITY,
    SPAN_DIRECTORY_SESSION,
    SPAN_FILE_SESSION,
    THROTTLE_WAIT,
    TRAITS,
    OpName,
    expected_failures_text,
    is_expected_failure,
    prometheus_label,
    unexpected_failure_matchers,
)
from . import plots, waterfall
from .housekeeping import KERNEL_HOUSEKEEPING, housekeeping_of
from .prometheus import Prometheus, QueryRefusedError, Series
from .traces import SpanRecord, load_spans, resource_labels
from .window import LOOKBACK, Window, fit

OPERATION = OPERATION_DURATION.label(ATTR_OPERATION)
ERROR_TYPE = OPERATION_DURATION.label(ATTR_ERROR_TYPE)
DIRECTION = IO_BYTES.label(ATTR_IO_DIRECTION)
FAULT_TYPE = FAULTS_INJECTED.label(ATTR_FAULT)
LIMIT = THROTTLE_WAIT.label(ATTR_THROTTLE_LIMIT)
MOUNT_LABEL = prometheus_label(RESOURCE_MOUNTPOINT)
COUNT, BUCKET = OPERATION_DURATION.series("count"), OPERATION_DURATION.series("bucket")
TOP_OPERATIONS = 8
"""Operations drawn one by one in the request chart; the rest are summed as 'other'."""
TOP_LATENCY = 5
"""Operations whose latency quantiles are drawn."""
QUANTILES = {"p99": 0.99, "p50": 0.5}
"""Latency quantiles drawn, one panel each, the tail first."""
TRACE_ID = re.compile(r"[0-9a-f]{32}")
QUANTITY = re.compile(r"[\d.,]+ \S+")
"""A table cell that is a number with its unit (1.5 KiB, 20 µs)."""
SESSIONS = 3
"""Slowest file sessions drawn as waterfalls."""
MOVED = {OpName.READ.value: 0, OpName.WRITE.value: 1}
"""The operations that move file data, and their column (read, written) in the bytes table."""
assert set(MOVED) == {op.value for op, traits in TRAITS.items() if traits.direction}


class ReportError(ValueError):
    """The report cannot tell which mount to cover: a usage error, with what to pass instead."""


@dataclass
class Panel:
    """One titled panel: a chart, or HTML (the waterfalls), with a caption; ``empty`` says in one line
    that there is nothing to show."""

    title: str
    caption: str
    chart: plots.Chart | None = None
    body: str = ""
    empty: str = ""


@dataclass
class Table:
    """One titled table, or the line that says it has no rows."""

    title: str
    header: list[str]
    rows: list[list[str]]
    empty: str


@dataclass
class Report:
    generated: float
    mounts: str
    """Which mounts the report covers, in words."""
    prometheus: str
    span_file: Path | None
    window: Window | None = None
    headline: str = ""
    housekeeping: str = ""
    notice: str = ""
    """Why a part is missing (no Prometheus), with what to do."""
    panels: list[Panel] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def _mounts(prometheus: Prometheus) -> list[str]:
    """Mountpoints with request series in the window."""
    return prometheus.label_values(MOUNT_LABEL, COUNT)


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
        known = _mounts(prometheus)
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
    known = _mounts(prometheus)
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


def _rate(series: str, window: Window, mount: str, *matchers: str) -> str:
    """The per-series rate of ``series`` of the mount selected by ``matchers``, without the series of kernel
    housekeeping (removed by a rate of the same window, so a series is removed exactly while it has a rate)."""
    expression = f"rate({series}{_selector(mount, *matchers)}[{window.rate}])"
    for kind in KERNEL_HOUSEKEEPING:
        error = f"{ERROR_TYPE}={_quote(kind.error_type)}" if kind.error_type else ""
        housekeeping = _selector(mount, f"{OPERATION}={_quote(kind.operation)}", error)
        expression = f"({expression} unless rate({series}{housekeeping}[{window.rate}]))"
    return expression


def _increase(prometheus: Prometheus, series: str, mount: str, labels: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    """How much each counter of ``series`` grew in the window, summed by ``labels``: its last value in the
    window minus its last value before it (none for a series born inside), so a mount's whole life counts."""
    by = ", ".join(labels)
    width = f"{max(prometheus.end - prometheus.start, 1):.0f}s"
    after = prometheus.instant(f"sum by ({by}) (last_over_time({series}{_selector(mount)}[{width}]))", *labels)
    before = prometheus.instant(
        f"sum by ({by}) (last_over_time({series}{_selector(mount)}[5m]))", *labels, at=prometheus.start
    )
    earlier = dict(before)
    return {key: value - earlier.get(key, 0.0) for key, value in after}


@dataclass
class Totals:
    """Requests per (operation, error type) and bytes per direction in the window."""

    requests: dict[tuple[str, ...], float]
    moved: dict[tuple[str, ...], float]

    def workload(self) -> Counter[str]:
        """Requests per operation, kernel housekeeping left out."""
        counts: Counter[str] = Counter()
        for (operation, error), value in self.requests.items():
            if housekeeping_of(operation, error) is None:
                counts[operation] += round(value)
        return counts

    def failures(self, expected: bool) -> Counter[str]:
        """The workload's failed requests: the unexpected per error type, or the expected answers
        (``EXPECTED_FAILURES``) per operation and error type."""
        counts: Counter[str] = Counter()
        for (operation, error), value in self.requests.items():
            if (
                error
                and housekeeping_of(operation, error) is None
                and is_expected_failure(operation, error) == expected
            ):
                counts[f"{operation} {error}" if expected else error] += round(value)
        return counts

    def housekeeping(self) -> Counter[str]:
        """Kernel housekeeping requests, by their description."""
        counts: Counter[str] = Counter()
        for (operation, error), value in self.requests.items():
            kind = housekeeping_of(operation, error)
            if kind is not None:
                counts[kind.described] += round(value)
        return counts


def _totals(prometheus: Prometheus, mount: str) -> Totals:
    return Totals(
        _increase(prometheus, COUNT, mount, (OPERATION, ERROR_TYPE)),
        _increase(prometheus, IO_BYTES.series(), mount, (DIRECTION,)),
    )


def _clock(moment: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(moment))


def _headline(totals: Totals, window: Window) -> str:
    """Requests, failures, bytes and the time span in one line."""
    failed, expected = totals.failures(expected=False), totals.failures(expected=True)
    answers = f", {sum(expected.values()):,} expected answers ({', '.join(expected)})" if expected else ""
    moved = {direction: value for (direction,), value in totals.moved.items()}
    return (
        f"{sum(totals.workload().values()):,} requests, {_counted(failed, 'failed')}{answers}, "
        f"{plots.binary_bytes(moved.get('read', 0.0))} read, {plots.binary_bytes(moved.get('write', 0.0))} written, "
        f"{_clock(window.start)} to {_clock(window.end)} {time.strftime('%Z')} "
        f"({plots.human_duration(window.seconds)})"
    )


def _counted(counts: Counter[str], what: str) -> str:
    """'16 failed (EIO 12, ENOSPC 4)'."""
    listed = ", ".join(f"{key} {count:,}" for key, count in counts.most_common())
    return f"{sum(counts.values()):,} {what}" + (f" ({listed})" if listed else "")


def _housekeeping_line(totals: Totals) -> str:
    counts = totals.housekeeping()
    if not counts:
        return "Kernel housekeeping: none in the window."
    listed = "; ".join(f"{count:,} {described}" for described, count in counts.most_common())
    return f"Kernel housekeeping, not in the charts and tables below: {listed}."


def _heatmap(prometheus: Prometheus, mount: str, window: Window) -> plots.Chart:
    """Requests/s per duration bucket; Prometheus's buckets are cumulative, so each is the difference."""
    series = prometheus.range(f"sum by (le) ({_rate(BUCKET, window, mount)})", "le")
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


def _ordered(series: list[Series], top: list[str]) -> list[Series]:
    return sorted(series, key=lambda item: top.index(item.label) if item.label in top else len(top))


def _request_panels(prometheus: Prometheus, mount: str, window: Window, totals: Totals) -> list[Panel]:
    top = [name for name, count in totals.workload().most_common(TOP_OPERATIONS) if count > 0]
    chosen = f"{OPERATION}=~{_quote('|'.join(top))}" if top else ""
    by_operation = f"sum by ({OPERATION}) ({_rate(COUNT, window, mount, chosen)})"
    requests = _ordered(prometheus.range(by_operation, OPERATION), top)
    if top:
        rest = f"{OPERATION}!~{_quote('|'.join(top))}"
        for item in prometheus.range(f"sum({_rate(COUNT, window, mount, rest)})", OPERATION):
            if any(item.values):
                requests.append(Series(plots.OTHER, item.times, item.values))
    slow = f"{OPERATION}=~{_quote('|'.join(top[:TOP_LATENCY]))}" if top else ""
    latency = {
        name: _ordered(
            prometheus.range(
                f"histogram_quantile({quantile}, sum by (le, {OPERATION}) ({_rate(BUCKET, window, mount, slow)}))",
                OPERATION,
            ),
            top,
        )
        for name, quantile in QUANTILES.items()
    }
    failed = " or ".join(
        f"rate({COUNT}{selector}[{window.rate}])" for selector in unexpected_failure_matchers(*filter(None, [mount]))
    )
    start, end = prometheus.start, prometheus.end
    return [
        Panel(
            "Requests per second by operation",
            f"The {len(top)} busiest operations of the workload; the rest summed as 'other'.",
            plots.lines(requests, start, end, "requests/s"),
            empty="No requests in the window.",
        ),
        *(
            Panel(
                f"{name} latency by operation",
                f"{name} request duration of the {min(len(top), TOP_LATENCY)} busiest operations, log scale.",
                plots.latency(series, start, end, name),
                empty="No requests in the window.",
            )
            for name, series in latency.items()
        ),
        Panel(
            "Request duration heatmap",
            "Requests per second in each duration bucket: darker is more requests.",
            _heatmap(prometheus, mount, window),
            empty="No requests in the window.",
        ),
        Panel(
            "Failed requests per second by errno",
            f"Requests that ended with an error, by error.type; expected answers ({expected_failures_text()}) "
            "left out.",
            plots.lines(
                prometheus.range(f"sum by ({ERROR_TYPE}) ({failed})", ERROR_TYPE),
                start,
                end,
                "failed requests/s",
            ),
            empty="No failed requests in the window.",
        ),
    ]


def _throughput_panel(prometheus: Prometheus, mount: str, window: Window) -> Panel:
    series = prometheus.range(
        f"sum by ({DIRECTION}) (rate({IO_BYTES.series()}{_selector(mount)}[{window.rate}]))", DIRECTION
    )
    return Panel(
        "Throughput",
        "Bytes read and written through the mount per second.",
        plots.byte_rates(series, prometheus.start, prometheus.end),
        empty="No file data read or written in the window.",
    )


_FAULTS_AND_THROTTLING = (
    (
        "Faults injected per second",
        "By fault type, as the fault rules fired.",
        FAULTS_INJECTED.series(),
        FAULT_TYPE,
        "faults/s",
        "No faults injected in the window.",
    ),
    (
        "Throttle waits",
        "Seconds requests spent waiting per second, by the limit that held them (1 = always one waiting).",
        THROTTLE_WAIT.series("sum"),
        LIMIT,
        "seconds waited per second",
        "No request waited for a throttle limit in the window.",
    ),
)
"""(title, caption, counter, label, unit, what an empty panel says)."""


def _fault_panels(prometheus: Prometheus, mount: str, window: Window) -> list[Panel]:
    return [
        Panel(
            title,
            caption,
            plots.lines(
                prometheus.range(f"sum by ({label}) (rate({counter}{_selector(mount)}[{window.rate}])) > 0", label),
                prometheus.start,
                prometheus.end,
                unit,
            ),
            empty=empty,
        )
        for title, caption, counter, label, unit, empty in _FAULTS_AND_THROTTLING
    ]


def _waterfall_panel(spans: list[SpanRecord], span_file: Path) -> Panel:
    sessions = waterfall.slowest_sessions(spans, SESSIONS)
    return Panel(
        "Slowest file sessions",
        "Each open file's operations on its session's time line, a run of the same operation as one row; "
        f"orange: a fault injected, red: failed. Show one as a tree with: interposer traces {span_file} --trace ID",
        body="".join(waterfall.render(session) for session in sessions),
        empty="No file sessions in the window.",
    )


def _workload_spans(spans: Iterable[SpanRecord]) -> list[SpanRecord]:
    """The workload's operations: no parent spans, no kernel housekeeping."""
    parents = {SPAN_FILE_SESSION, SPAN_DIRECTORY_SESSION, SPAN_ACTIVITY}
    return [
        span
        for span in spans
        if span.name not in parents and housekeeping_of(span.operation, span.attributes.get(ATTR_ERROR_TYPE)) is None
    ]


def _span_tables(spans: list[SpanRecord], top: int) -> list[Table]:
    operations = _workload_spans(spans)
    moved: dict[str, list[int]] = {}
    for span in operations:
        column = MOVED.get(span.operation)
        if column is not None and span.attributes.get(ATTR_TRANSFERRED):
            moved.setdefault(span.path, [0, 0])[column] += int(span.attributes[ATTR_TRANSFERRED])
    busiest = sorted(moved.items(), key=lambda item: (-sum(item[1]), item[0]))[:top]
    slowest = sorted(operations, key=lambda s: -s.duration_ms)[:top]
    return [
        Table(
            "Paths that moved the most bytes",
            ["path", "read", "written"],
            [[path, plots.binary_bytes(read), plots.binary_bytes(written)] for path, (read, written) in busiest],
            "No file data moved in the window.",
        ),
        Table(
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
                for s in slowest
            ],
            "No operations in the window.",
        ),
    ]


def _span_parts(report: Report, span_file: Path, start: float | None, end: float | None, top: int) -> None:
    """The waterfalls and tables of the spans in the window (all of them without one)."""
    spans = [
        s
        for s in load_spans(span_file)
        if (start is None or s.start_ns >= start * 1e9) and (end is None or s.start_ns <= end * 1e9)
    ]
    report.panels.append(_waterfall_panel(spans, span_file))
    report.tables = _span_tables(spans, top)


def build(
    prometheus_url: str,
    span_file: Path | None,
    since: float | None = None,
    rate_window: str | None = None,
    mounts: tuple[str, ...] = (),
    all_mounts: bool = False,
    top: int = 15,
    lookback: float = LOOKBACK,
) -> Report:
    """Query, plot and tabulate the chosen mount(s): the span of their data within the last ``lookback``
    seconds, or the last ``since`` seconds."""
    now = time.time()
    prometheus = Prometheus(prometheus_url, now - (since or lookback), now, 60.0)
    mount, described = choose_mounts(prometheus, span_file, mounts, all_mounts)
    try:
        window = fit(prometheus, _selector(mount), now, since, rate_window, lookback)
        prometheus.start, prometheus.end, prometheus.step = window.start, window.end, window.step
        report = Report(now, described, prometheus.url, span_file, window)
        if window.first is None:
            report.notice = (
                f"Prometheus has no requests of {described} in the last {plots.human_duration(since or lookback)}: "
                "is the mount running, and 'interposer stack up' scraping it?"
            )
        totals = _totals(prometheus, mount)
        report.headline = _headline(totals, window)
        report.housekeeping = _housekeeping_line(totals)
        report.panels = [
            *_request_panels(prometheus, mount, window, totals),
            _throughput_panel(prometheus, mount, window),
            *_fault_panels(prometheus, mount, window),
        ]
    except QueryRefusedError as exc:
        raise ReportError(str(exc)) from None
    if span_file is not None:
        _span_parts(report, span_file, window.start, window.end, top)
    return report


def build_from_spans(span_file: Path, notice: str, top: int = 15) -> Report:
    """The span parts alone, with ``notice`` saying why there are no charts (no Prometheus to query)."""
    labels = resource_labels(span_file)
    report = Report(time.time(), labels.get(RESOURCE_MOUNTPOINT, str(span_file)), "", span_file, notice=notice)
    _span_parts(report, span_file, None, None, top)
    return report


_STYLE = """
body{font-family:sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.5em;margin-bottom:.2em}
.panel{border:1px solid #ddd;border-radius:4px;margin:1em 0;padding:.6em .8em}
.panel h2{font-size:1.1em;margin:0 0 .2em}
.caption{color:#555;font-size:.85em;margin:0 0 .4em}
.panel svg{display:block;width:100%;height:auto}
.headline{font-size:1.1em;font-weight:bold;margin:.3em 0}
.notice{color:#a00;margin:.3em 0}
.housekeeping{color:#555;font-size:.85em;margin:.3em 0}
.panel.empty h2,.panel.empty .none{display:inline;margin:0}
.panel.empty .none{color:#555;font-size:.9em;margin-left:.6em}
.waterfall{margin:.8em 0}
.waterfall h3{font-size:.9em;font-weight:normal;margin:.3em 0;overflow-wrap:anywhere}
.row{display:flex;align-items:center;height:16px;font-size:12px}
.op{flex:none;width:15em;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.lane{position:relative;flex:1;height:10px;background:#f2f2f2}
.bar{position:absolute;top:0;height:100%;background:#3b7dd8}
.bar.injected{background:#e8912d}
.bar.failed{background:#d33}
td.number{text-align:right;white-space:nowrap;width:7em}
.note{color:#555;font-size:.8em;margin:.2em 0}
table{border-collapse:collapse;font-size:.85em;width:100%}
td code{white-space:nowrap}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;overflow-wrap:anywhere}
"""


def _panel(panel: Panel) -> str:
    """A panel; one without data is one line, its title and what it would have shown."""
    points = panel.chart.points if panel.chart is not None else int(bool(panel.body))
    if not points:
        return (
            f"<section class='panel empty' data-points='0'><h2>{html.escape(panel.title)}</h2>"
            f"<span class='none'>{html.escape(panel.empty)}</span></section>"
        )
    content = panel.chart.svg if panel.chart is not None else panel.body
    return (
        f"<section class='panel' data-points='{points}'><h2>{html.escape(panel.title)}</h2>"
        f"<p class='caption'>{html.escape(panel.caption)}</p>{content}</section>"
    )


def _table(table: Table) -> str:
    if not table.rows:
        return (
            f"<section class='panel empty' data-rows='0'><h2>{html.escape(table.title)}</h2>"
            f"<span class='none'>{html.escape(table.empty)}</span></section>"
        )
    header = "".join(f"<th>{html.escape(cell)}</th>" for cell in table.header)
    rows = "".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>" for row in table.rows)
    return (
        f"<section class='panel' data-rows='{len(table.rows)}'><h2>{html.escape(table.title)}</h2>"
        f"<table><tr>{header}</tr>{rows}</table></section>"
    )


def _cell(text: str) -> str:
    """A table cell; trace ids in code, unbroken, so they can be copied whole; quantities aligned right."""
    escaped = html.escape(text)
    if TRACE_ID.fullmatch(text):
        return f"<td><code>{escaped}</code></td>"
    return f"<td class='number'>{escaped}</td>" if QUANTITY.fullmatch(text) else f"<td>{escaped}</td>"


def _sources(report: Report) -> str:
    parts = []
    if report.prometheus:
        rate = f", rates over {report.window.rate}" if report.window else ""
        parts.append(f"metrics from <code>{html.escape(report.prometheus)}</code>{rate}")
    if report.span_file:
        parts.append(f"spans from <code>{html.escape(str(report.span_file))}</code>")
    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(report.generated))
    return f"<p class='caption'>{'; '.join(parts).capitalize()}; made {generated}.</p>"


def render(report: Report) -> str:
    """The report as one self-contained HTML page."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>cnfs-interposer report: {html.escape(report.mounts)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>cnfs-interposer report: {html.escape(report.mounts)}</h1>",
    ]
    if report.headline:
        parts.append(f"<p class='headline'>{html.escape(report.headline)}</p>")
    if report.notice:
        parts.append(f"<p class='notice'>{html.escape(report.notice)}</p>")
    parts.append(_sources(report))
    if report.housekeeping:
        parts.append(f"<p class='housekeeping'>{html.escape(report.housekeeping)}</p>")
    parts.extend(_panel(panel) for panel in report.panels)
    parts.extend(_table(table) for table in report.tables)
    parts.append("</body></html>")
    return "\n".join(parts)
