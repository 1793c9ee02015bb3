"""Building the span export pipeline from the config and the standard OTEL_* environment variables.

Explicit configuration wins; an unset field falls back to the OpenTelemetry
variable the SDK documents; the embedded default (no endpoint anywhere)
writes a local span file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from ..config import TracingConfig
from ..names import SIGNAL_TRACES
from ..telemetry import CountingSpanExporter, TelemetryHealth, env, otlp_exporter, signal_variable
from .spanfile import SpanFileExporter

log = logging.getLogger(__name__)


@dataclass
class TracingSetup:
    """What the mount keeps of the tracing pipeline: where kept spans go, at which ratio."""

    processor: SpanProcessor
    ratio: float
    exporter_name: str
    destination: str

    def shutdown(self) -> None:
        """Export what is queued and stop the export thread."""
        self.processor.shutdown()


def sample_ratio(config: TracingConfig) -> float:
    """The configured ratio, else OTEL_TRACES_SAMPLER(_ARG), else 1."""
    if config.sample_ratio is not None:
        return config.sample_ratio
    sampler = (env("OTEL_TRACES_SAMPLER") or "parentbased_always_on").lower()
    if sampler.endswith("always_off"):
        return 0.0
    if sampler.endswith("traceidratio"):
        try:
            return min(max(float(env("OTEL_TRACES_SAMPLER_ARG") or "1"), 0.0), 1.0)
        except ValueError:
            log.warning("OTEL_TRACES_SAMPLER_ARG is not a number; sampling everything")
    return 1.0


def exporter_kind(config: TracingConfig) -> str:
    """'otlp', 'file' or 'none'."""
    if config.exporter is not None:
        return config.exporter
    chosen = (env("OTEL_TRACES_EXPORTER") or "").split(",")[0].strip().lower()
    if chosen in ("otlp", "none"):
        return chosen
    if config.endpoint or env(*signal_variable(SIGNAL_TRACES, "ENDPOINT")):
        return "otlp"
    return "file"


def build_tracing(config: TracingConfig, default_file: Path, health: TelemetryHealth) -> TracingSetup:
    """A bounded batch processor in front of the exporter; the tracing layer decides what is kept."""
    kind = exporter_kind(config)
    exporter: SpanExporter | None
    if kind == "otlp":
        exporter, destination = otlp_exporter(SIGNAL_TRACES, config, "tracing")
    elif kind == "file":
        path = config.file or default_file
        exporter, destination = SpanFileExporter(path, config.file_max_bytes), str(path)
    else:
        exporter, destination = None, "nowhere"
    processor: SpanProcessor
    if exporter is None:
        processor = SpanProcessor()
    else:
        processor = BatchSpanProcessor(
            CountingSpanExporter(exporter, health),
            max_queue_size=config.max_queue_size,
            schedule_delay_millis=config.export_delay * 1000,
            max_export_batch_size=min(512, config.max_queue_size),
        )
    return TracingSetup(processor, sample_ratio(config), kind, destination)
