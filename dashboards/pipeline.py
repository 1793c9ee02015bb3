"""Telemetry pipeline health: what the interposer could not export, and what the collector took in."""

from __future__ import annotations

from grafanalib import core

from interposer.names import ATTR_TELEMETRY_SIGNAL, EXPORT_FAILURES, SPANS_DROPPED

from .common import RATE_WINDOW, dashboard, selector, targets
from .panels import grid, timeseries

SIGNAL = EXPORT_FAILURES.label(ATTR_TELEMETRY_SIGNAL)
COLLECTOR_SERIES = {
    "spans": ("otelcol_receiver_accepted_spans_total", "otelcol_receiver_refused_spans_total"),
    "metric points": ("otelcol_receiver_accepted_metric_points_total", "otelcol_receiver_refused_metric_points_total"),
}
"""The OpenTelemetry Collector's own metrics (its telemetry endpoint, scraped by Prometheus)."""


def build() -> core.Dashboard:
    interposer = selector(operation=False)
    collector_panels = [
        timeseries(
            f"Collector: {kind} accepted and refused/s",
            f"{kind.capitalize()} the OpenTelemetry Collector's receivers accepted and refused.",
            targets(
                (f"sum(rate({accepted}[{RATE_WINDOW}]))", "accepted"),
                (f"sum(rate({refused}[{RATE_WINDOW}]))", "refused"),
            ),
            "ops",
            grid(12 * index, 9, 12, 9),
        )
        for index, (kind, (accepted, refused)) in enumerate(COLLECTOR_SERIES.items())
    ]
    return dashboard(
        "cnfs-telemetry",
        "cnfs-interposer / Telemetry pipeline",
        "Dropped spans and failed exports in the interposer; accepted and refused data at the collector.",
        [
            timeseries(
                "Spans dropped/s",
                "Spans the interposer dropped because its export queue was full (slow or dead collector).",
                targets((f"sum(rate({SPANS_DROPPED.series()}{interposer}[{RATE_WINDOW}]))", "dropped")),
                "ops",
                grid(0, 0, 12, 9),
            ),
            timeseries(
                "Export failures/s",
                "Failed telemetry exports from the interposer, by signal.",
                targets(
                    (
                        f"sum by ({SIGNAL}) (rate({EXPORT_FAILURES.series()}{interposer}[{RATE_WINDOW}]))",
                        f"{{{{{SIGNAL}}}}}",
                    )
                ),
                "ops",
                grid(12, 0, 12, 9),
            ),
            *collector_panels,
        ],
    )
