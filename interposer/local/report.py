"""``interposer report``: an HTML page of plots and tables, for a person without Grafana.

It draws on a Prometheus (the local stack's, or any) for the time series and
on a span file for paths and traces: a latency heatmap, throughput, errors
by errno, the paths that moved the most bytes and the slowest operations.
The page is self-contained: the plots are inline SVG, there is no script.
"""

from __future__ import annotations

import html
import io
import json
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure as MatplotlibFigure

from ..names import (
    ATTR_ERROR_TYPE,
    ATTR_TRANSFERRED,
    IO_BYTES,
    OPERATION_DURATION,
    SPAN_ACTIVITY,
    SPAN_DIRECTORY_SESSION,
    SPAN_FILE_SESSION,
)
from .traces import SpanRecord, load_spans

OPERATION, ERROR_TYPE = OPERATION_DURATION.prometheus_labels
DIRECTION = IO_BYTES.prometheus_labels[0]


@dataclass
class Series:
    """One labelled time series from a range query."""

    labels: dict[str, str]
    times: list[float]
    values: list[float]


@dataclass
class Figure:
    title: str
    svg: str
    points: int
    """Data points drawn: a plot without data says so instead of drawing an empty frame."""


@dataclass
class Report:
    generated: float
    since: float
    prometheus: str
    span_file: Path | None
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)


def query_range(prometheus: str, promql: str, start: float, end: float, step: float) -> list[Series]:
    """A range query's matrix, as series."""
    parameters = urllib.parse.urlencode({"query": promql, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{parameters}", timeout=30) as response:
        reply: dict[str, Any] = json.load(response)
    if reply.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {promql}: {reply.get('error')}")
    return [
        Series(item["metric"], [float(t) for t, _ in item["values"]], [float(v) for _, v in item["values"]])
        for item in reply["data"]["result"]
    ]


def _svg(figure: MatplotlibFigure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _lines(title: str, series: list[Series], label: str, unit: str, mirror: str | None = None) -> Figure:
    figure, axes = plt.subplots(figsize=(10, 3.2))
    points = 0
    for item in series:
        name = item.labels.get(label, "all")
        sign = -1.0 if name == mirror else 1.0
        axes.plot([t - item.times[0] for t in item.times], [sign * v for v in item.values], label=name)
        points += len(item.values)
    axes.set_title(title)
    axes.set_xlabel("seconds since the start of the window")
    axes.set_ylabel(unit + (f" ({mirror} below zero)" if mirror else ""))
    if series:
        axes.legend(loc="upper right", fontsize="small")
    return Figure(title, _svg(figure), points)


def _heatmap(title: str, series: list[Series]) -> Figure:
    """Requests per second in each duration bucket over time (the buckets are cumulative in Prometheus)."""
    by_bound = sorted(
        ((float(item.labels["le"]), item) for item in series if item.labels.get("le") not in (None, "+Inf")),
        key=lambda pair: pair[0],
    )
    figure, axes = plt.subplots(figsize=(10, 3.6))
    points = 0
    if by_bound:
        times = by_bound[0][1].times
        rows, previous = [], [0.0] * len(times)
        for _, item in by_bound:
            values = dict(zip(item.times, item.values, strict=True))
            current = [values.get(t, 0.0) for t in times]
            rows.append([max(0.0, now - before) for now, before in zip(current, previous, strict=True)])
            previous = current
        points = sum(1 for row in rows for value in row if value > 0)
        axes.imshow(rows, aspect="auto", origin="lower", cmap="Oranges", interpolation="nearest")
        step = max(1, len(by_bound) // 8)
        axes.set_yticks(range(0, len(by_bound), step), [f"{bound:g}s" for bound, _ in by_bound][::step])
        axes.set_xlabel("time (one column per step)")
    axes.set_title(title)
    return Figure(title, _svg(figure), points)


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
            [[path, f"{count:,}"] for path, count in moved.most_common(top)],
        ),
        (
            "Slowest operations",
            ["ms", "operation", "path", "error", "trace"],
            [
                [f"{s.duration_ms:.3f}", s.name, s.path, str(s.attributes.get(ATTR_ERROR_TYPE, "")), s.trace_id]
                for s in slowest[:top]
            ],
        ),
    ]


def build(prometheus: str, span_file: Path | None, since: float, rate_window: str = "1m", top: int = 15) -> Report:
    """Query, plot and tabulate the last ``since`` seconds."""
    end = time.time()
    start = end - since
    step = max(since / 240, 1.0)
    count, bucket = OPERATION_DURATION.series("count"), OPERATION_DURATION.series("bucket")
    report = Report(end, since, prometheus, span_file)

    def ranged(promql: str) -> list[Series]:
        return query_range(prometheus, promql, start, end, step)

    report.figures = [
        _heatmap("Request duration (requests/s per bucket)", ranged(f"sum by (le) (rate({bucket}[{rate_window}]))")),
        _lines(
            "Throughput",
            ranged(f"sum by ({DIRECTION}) (rate({IO_BYTES.series()}[{rate_window}]))"),
            DIRECTION,
            "bytes/s",
            mirror="read",
        ),
        _lines(
            "Errors by errno",
            ranged(f'sum by ({ERROR_TYPE}) (rate({count}{{{ERROR_TYPE}!=""}}[{rate_window}]))'),
            ERROR_TYPE,
            "failed requests/s",
        ),
        _lines(
            "Requests by operation",
            ranged(f"sum by ({OPERATION}) (rate({count}[{rate_window}]))"),
            OPERATION,
            "requests/s",
        ),
    ]
    if span_file is not None:
        report.tables = _span_tables([s for s in load_spans(span_file) if s.start_ns >= start * 1e9], top)
    return report


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))


def render(report: Report) -> str:
    """The report as one self-contained HTML page."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>cnfs-interposer report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}figure{margin:1.5em 0}"
        "table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}"
        ".empty{color:#a00}</style></head><body>",
        "<h1>cnfs-interposer report</h1>",
        f"<p>The {report.since / 60:.0f} minutes up to {_when(report.generated)}"
        f" from <code>{html.escape(report.prometheus)}</code>"
        + (f" and <code>{html.escape(str(report.span_file))}</code>" if report.span_file else "")
        + ".</p>",
    ]
    for figure in report.figures:
        parts.append(f"<figure data-points='{figure.points}'>")
        parts.append(figure.svg if figure.points else f"<p class='empty'>{html.escape(figure.title)}: no data</p>")
        parts.append(f"<figcaption>{html.escape(figure.title)}</figcaption></figure>")
    for title, header, rows in report.tables:
        parts.append(f"<h2>{html.escape(title)}</h2><table data-rows='{len(rows)}'><tr>")
        parts.extend(f"<th>{html.escape(cell)}</th>" for cell in header)
        parts.append("</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
