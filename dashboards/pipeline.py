"""Telemetry pipeline health: what the interposer could not export, and what the collector took in."""

from __future__ import annotations

from grafanalib import core

from interposer.names import ATTR_TELEMETRY_SIGNAL, EXPORT_FAILURES, SPANS_DROPPED

from .common import RATE_WINDOW, dashboard, selector, targets
from .panels import grid, timeseries

SIGNAL = EXPORT_FAILURES.label(ATTR_TELEMETRY_SIGNAL)
COLLECTOR_SPANS = ("otelcol_receiver_accepted_spans", "otelcol_receiver_refused_spans")
"""The OpenTelemetry Collector's own counters of the spans its receivers took in (its telemetry endpoint, scraped
by Prometheus).  Without ``_total``: the collector's pull reader defaults to without_type_suffix and without_units
(collector v0.155.0, service/telemetry/otelconftelemetry/factory.go), and the rendered configuration sets
neither; tests/test_stack_e2e.py reads them from the running collector.  Metric points are left out: the
interposers' metrics reach Prometheus by scraping only, so no receiver of the deployed collector takes any."""
COLLECTOR_SENT = "otelcol_exporter_sent_spans"
COLLECTOR_QUEUE = ("otelcol_exporter_queue_size", "otelcol_exporter_queue_capacity")
"""What each exporter passed on (to Jaeger), and how full its sending queue is: a queue filling up is Jaeger slow
or gone, before anything is refused."""


def build() -> core.Dashboard:
    interposer = selector(operation=False)
    accepted, refused = COLLECTOR_SPANS
    size, capacity = COLLECTOR_QUEUE
    collector_panels = [
        timeseries(
            "Collector: spans accepted and refused/s",
            "Spans the OpenTelemetry Collector's receivers accepted and refused.",
            targets(
                (f"sum(rate({accepted}[{RATE_WINDOW}]))", "accepted"),
                (f"sum(rate({refused}[{RATE_WINDOW}]))", "refused"),
            ),
            "ops",
            grid(0, 9, 8, 9),
        ),
        timeseries(
            "Collector: spans sent on/s",
            "Spans each of the collector's exporters sent on (otlp_grpc/jaeger: to Jaeger).",
            targets((f"sum by (exporter) (rate({COLLECTOR_SENT}[{RATE_WINDOW}]))", "{{exporter}}")),
            "ops",
            grid(8, 9, 8, 9),
        ),
        timeseries(
            "Collector: export queue fill",
            "How full each exporter's sending queue is: rising means its backend (Jaeger) is slow or gone.",
            targets((f"max by (exporter) ({size} / {capacity})", "{{exporter}}")),
            "percentunit",
            grid(16, 9, 8, 9),
        ),
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
