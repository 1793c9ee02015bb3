"""Latency: the distribution of request durations, percentiles per operation, links to traces."""

from __future__ import annotations

from grafanalib import core

from interposer.names import OPERATION_DURATION

from .common import OPERATION, RATE_WINDOW, TRACE_SEARCH_LINK, dashboard, selector, targets
from .panels import grid, heatmap, timeseries

BUCKET = OPERATION_DURATION.series("bucket")


def _quantile(quantile: float) -> core.TimeSeries:
    percent = int(quantile * 100)
    return timeseries(
        f"p{percent} by operation",
        f"{percent}th percentile of request duration per operation. Exemplars link to the trace of a "
        "request in that bucket; the data link opens the Jaeger search for the operation.",
        targets(
            (
                f"histogram_quantile({quantile}, sum by (le, {OPERATION}) (rate({BUCKET}{selector()}[{RATE_WINDOW}])))",
                f"{{{{{OPERATION}}}}}",
            ),
            exemplar=True,
        ),
        "s",
        grid(0, 9 + 8 * [0.5, 0.9, 0.99].index(quantile), 24, 8),
        links=[TRACE_SEARCH_LINK],
    )


def build() -> core.Dashboard:
    return dashboard(
        "cnfs-latency",
        "cnfs-interposer / Latency",
        "Request duration: heatmap, percentiles per operation, exemplars and links to Jaeger.",
        [
            heatmap(
                "Request duration",
                "How many requests took how long, over time (all selected operations).",
                targets((f"sum by (le) (rate({BUCKET}{selector()}[{RATE_WINDOW}]))", "{{le}}"), heatmap=True),
                grid(0, 0, 24, 9),
            ),
            *(_quantile(quantile) for quantile in (0.5, 0.9, 0.99)),
        ],
    )
