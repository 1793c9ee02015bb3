"""Bug 7 of issue 16: every span dropped is counted where it is dropped, from public interfaces only.

Before, the export queue was the SDK's batch processor, whose drops were
counted by matching its log text; its own duplicate filter let through one
line of thousands, so 4,808 drops counted as 1.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from interposer.config import TracingConfig
from interposer.layers.tracing.records import SpanData
from interposer.names import SIGNAL_TRACES
from interposer.telemetry.export_process import QueuedExport
from interposer.telemetry.shared import CountingSpanExporter, TelemetryHealth

from ..conftest import wait_for

SPAN = SpanData("fuse.read", 1, 2, 0, 1, 2, {}, [], None, None)
QUEUE = 64


class StuckExporter(SpanExporter):
    """Holds the first batch until released, as a dead collector holds an export until its timeout."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS) -> None:
        self.release = threading.Event()
        self.taken = 0
        self.batches = 0
        self.result = result

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.taken += len(spans)
        self.batches += 1
        self.release.wait(30)
        return self.result

    def shutdown(self) -> None:
        self.release.set()


def _export(exporter: SpanExporter, health: TelemetryHealth) -> QueuedExport:
    config = TracingConfig(max_queue_size=QUEUE, export_delay=0.01)
    return QueuedExport(CountingSpanExporter(exporter, health), Resource({}), config, health)


def test_every_span_the_full_queue_refuses_is_counted() -> None:
    health = TelemetryHealth()
    exporter = StuckExporter()
    export = _export(exporter, health)
    export.add([SPAN] * QUEUE)
    wait_for(lambda: exporter.taken > 0, what="the export thread to take the first batch")
    export.add([SPAN] * 5000)
    in_flight = exporter.taken
    exporter.release.set()
    export.close()
    assert health.dropped_spans == QUEUE + 5000 - QUEUE - in_flight  # the queue refilled to QUEUE, the rest dropped
    assert exporter.taken == QUEUE + 5000 - health.dropped_spans
    assert health.export_failures[SIGNAL_TRACES] == 0


def test_a_failed_export_counts_its_spans_as_dropped() -> None:
    health = TelemetryHealth()
    exporter = StuckExporter(SpanExportResult.FAILURE)
    exporter.release.set()
    export = _export(exporter, health)
    export.add([SPAN] * 10)
    export.close()
    assert health.dropped_spans == 10
    assert health.export_failures[SIGNAL_TRACES] == exporter.batches


def test_nothing_imports_private_opentelemetry_names() -> None:
    """Public interfaces only: no module of the interposer reaches into the SDK's or an exporter's private names."""
    private = ("_mapping", "_receive_metrics", "_preferred_temporality", "_preferred_aggregation", "._endpoint")
    root = Path(__file__).parents[2] / "interposer"
    offenders = [
        f"{path.relative_to(root)}: {name}"
        for path in sorted(root.rglob("*.py"))
        for name in private
        if name in path.read_text()
    ]
    offenders += [
        f"{path.relative_to(root)}: opentelemetry private module"
        for path in sorted(root.rglob("*.py"))
        if "opentelemetry" in (text := path.read_text()) and ("._internal" in text or "._shared" in text)
    ]
    assert not offenders
