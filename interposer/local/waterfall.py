"""The slowest file sessions as span waterfalls: what a handle did, when, and for how long.

A file session is one trace (the ``fuse.file`` span and its operations, in
segments when long); the waterfall draws its operations as bars on the
session's time line, so the stalls are visible at a glance, and names the
trace id to look it up with ``interposer traces FILE --trace ID`` or in Jaeger.
A run of the same operation (thirty 64 KiB writes: "write x30") is one row with its count
and total time, and the kernel's own probes are left out, so a session
fits in a few rows.
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass

from ..names import ATTR_ERROR_TYPE, EVENT_FAULT, SPAN_FILE_SESSION
from .housekeeping import housekeeping_of
from .plots import human_seconds
from .traces import SpanRecord

MAX_ROWS = 12
"""Rows drawn per session; a longer session shows its slowest, in time order."""


@dataclass
class Row:
    """A run of one operation with one outcome: its first start, last end, count and summed duration."""

    operation: str
    error: str
    injected: bool
    """A fault rule acted on it (an error or a delay): the bar says it was deliberate."""
    start_ns: int
    end_ns: int
    count: int
    busy_ns: int

    def label(self) -> str:
        times = f" x{self.count}" if self.count > 1 else ""
        total = f"{human_seconds(self.busy_ns / 1e9)}{' total' if self.count > 1 else ''}"
        outcome = "".join(f" {word}" for word in (self.error, "injected" if self.injected else "") if word)
        return f"{self.operation}{times} {total}{outcome}"


@dataclass
class Waterfall:
    """One session: its trace, path, time span and the rows to draw."""

    trace_id: str
    path: str
    start_ns: int
    end_ns: int
    rows: list[Row]
    hidden: int
    """Rows of the session left out to keep the chart legible."""

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def collapse(operations: list[SpanRecord]) -> list[Row]:
    """Consecutive operations of the same name and outcome as one row each, in time order."""
    rows: list[Row] = []
    for span in sorted(operations, key=lambda s: s.start_ns):
        error, injected = str(span.attributes.get(ATTR_ERROR_TYPE, "")), EVENT_FAULT in span.events
        last = rows[-1] if rows else None
        if last is not None and (last.operation, last.error, last.injected) == (span.operation, error, injected):
            last.end_ns = max(last.end_ns, span.end_ns)
            last.count += 1
            last.busy_ns += span.end_ns - span.start_ns
        else:
            rows.append(
                Row(span.operation, error, injected, span.start_ns, span.end_ns, 1, span.end_ns - span.start_ns)
            )
    return rows


def slowest_sessions(spans: list[SpanRecord], count: int) -> list[Waterfall]:
    """The ``count`` longest file sessions, longest first."""
    by_trace: dict[str, list[SpanRecord]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    sessions = []
    for trace_id, members in by_trace.items():
        heads = [span for span in members if span.name == SPAN_FILE_SESSION]
        if not heads:
            continue
        rows = collapse(
            [
                span
                for span in members
                if span.name != SPAN_FILE_SESSION
                and housekeeping_of(span.operation, span.attributes.get(ATTR_ERROR_TYPE)) is None
            ]
        )
        shown = sorted(sorted(rows, key=lambda row: -row.busy_ns)[:MAX_ROWS], key=lambda row: row.start_ns)
        sessions.append(
            Waterfall(
                trace_id,
                heads[0].path,
                min(span.start_ns for span in members),
                max(span.end_ns for span in members),
                shown,
                len(rows) - len(shown),
            )
        )
    return sorted(sessions, key=lambda session: -session.seconds)[:count]


def render(session: Waterfall) -> str:
    """The session as an HTML waterfall: one row per run of operations, bars placed in percent of the session."""
    total = max(session.end_ns - session.start_ns, 1)
    rows = []
    for row in session.rows:
        left = 100 * (row.start_ns - session.start_ns) / total
        width = max(100 * (row.end_ns - row.start_ns) / total, 0.3)
        place = f"left:{left:.3f}%;width:{min(width, 100 - left):.3f}%"
        kind = "".join(f" {name}" for name, present in (("failed", row.error), ("injected", row.injected)) if present)
        rows.append(
            f"<div class='row'><span class='op'>{html.escape(row.label())}</span><span class='lane'>"
            f"<span class='bar{kind}' style='{place}'></span></span></div>"
        )
    more = f"<p class='note'>{session.hidden} faster rows not shown</p>" if session.hidden else ""
    return (
        f"<div class='waterfall' data-trace='{session.trace_id}'>"
        f"<h3>{html.escape(session.path)} — {human_seconds(session.seconds)} — trace "
        f"<code>{session.trace_id}</code></h3>{''.join(rows)}{more}</div>"
    )
