"""Render the metric reference in docs/metrics.md from the names module.

``python -m interposer.metrics_reference`` rewrites the generated part of the
page: every metric as Prometheus stores it.  A test fails when the page is
stale, and another proves the names against a real Prometheus.
"""

from __future__ import annotations

import sys

from .docgen import DOCS, rewrite
from .names import INSTRUMENTS, Instrument, InstrumentKind

PAGE = DOCS / "metrics.md"
COMMAND = "python -m interposer.metrics_reference"


def _series(instrument: Instrument) -> str:
    if instrument.kind is InstrumentKind.HISTOGRAM:
        return "<br>".join(f"`{instrument.series(suffix)}`" for suffix in ("bucket", "sum", "count"))
    return f"`{instrument.series()}`"


def render() -> str:
    """The generated reference table."""
    rows = [
        "| Prometheus series | type | unit | labels | OpenTelemetry name | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for instrument in INSTRUMENTS:
        labels = ", ".join(f"`{label}`" for label in instrument.prometheus_labels) or "none"
        rows.append(
            f"| {_series(instrument)} | {instrument.prometheus_type} | `{instrument.unit}` | {labels} "
            f"| `{instrument.name}` | {instrument.description} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    rewrite(PAGE, COMMAND, render())
    sys.stdout.write(f"rewrote the generated part of {PAGE}\n")
