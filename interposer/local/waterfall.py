"""The slowest file sessions as span waterfalls: what a handle did, when, and for how long.

A file session is one trace (the ``fuse.file`` span and its operations, in
segments when long); the waterfall draws each operation as a bar on the
session's time line, so the stalls are visible at a glance, and names the
trace id to look it up in ``interposer traces --tree`` or Jaeger.
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass

from ..names import ATTR_ERROR_TYPE, SPAN_FILE_SESSION
from .plots import human_seconds
from .traces import SpanRecord

MAX_ROWS = 30
"""Operations drawn per session; a longer session shows its slowest, in time order."""


@dataclass
class Waterfall:
    """One session: its trace, path, time span and the operations to draw."""

    trace_id: str
    path: str
    start_ns: int
    end_ns: int
    operations: list[SpanRecord]
    hidden: int
    """Operations of the session left out to keep the chart legible."""

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


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
        operations = [span for span in members if span.name != SPAN_FILE_SESSION]
        shown = sorted(sorted(operations, key=lambda s: -s.duration_ms)[:MAX_ROWS], key=lambda s: s.start_ns)
        sessions.append(
            Waterfall(
                trace_id,
                heads[0].path,
                min(span.start_ns for span in members),
                max(span.end_ns for span in members),
                shown,
                len(operations) - len(shown),
            )
        )
    return sorted(sessions, key=lambda session: -session.seconds)[:count]


def render(session: Waterfall) -> str:
    """The session as an HTML waterfall: one row per operation, bars placed in percent of the session."""
    total = max(session.end_ns - session.start_ns, 1)
    rows = []
    for span in session.operations:
        left = 100 * (span.start_ns - session.start_ns) / total
        width = max(100 * (span.end_ns - span.start_ns) / total, 0.3)
        error = span.attributes.get(ATTR_ERROR_TYPE)
        label = f"{span.operation} {human_seconds(span.duration_ms / 1e3)}" + (f" {error}" if error else "")
        place = f"left:{left:.3f}%;width:{min(width, 100 - left):.3f}%"
        rows.append(
            f"<div class='row'><span class='op'>{html.escape(label)}</span><span class='lane'>"
            f"<span class='bar{' failed' if error else ''}' style='{place}'></span></span></div>"
        )
    more = f"<p class='note'>{session.hidden} faster operations not shown</p>" if session.hidden else ""
    return (
        f"<div class='waterfall' data-trace='{session.trace_id}'>"
        f"<h3>{html.escape(session.path)} — {human_seconds(session.seconds)} — trace "
        f"<code>{session.trace_id}</code></h3>{''.join(rows)}{more}</div>"
    )
