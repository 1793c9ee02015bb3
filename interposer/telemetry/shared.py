"""What traces and metrics share: the resource, OTLP exporter construction, and telemetry health.

Explicit configuration wins; an unset field falls back to the OpenTelemetry
variable the SDK documents, so a mount behaves like any other OTel program.
Telemetry is never on the I/O path: exports run in the SDK's threads, and
their failures are counted here and logged rate-limited, never raised.
Counts come from where things are dropped (the mount's socket, the export
queue, an exporter's result), through public OpenTelemetry interfaces only:
never from the SDK's log text.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import Counter, Histogram, ObservableCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ..config import ConfigError, OtlpSection
from ..names import (
    K8S_ENVIRONMENT,
    RESOURCE_BACKING,
    RESOURCE_MOUNTPOINT,
    RESOURCE_VOLUME_ID,
    SERVICE_NAME_DEFAULT,
    SIGNAL_METRICS,
    SIGNAL_TRACES,
)

log = logging.getLogger(__name__)

_OTLP_EXPORTERS = {
    (SIGNAL_TRACES, "grpc"): "opentelemetry.exporter.otlp.proto.grpc.trace_exporter:OTLPSpanExporter",
    (SIGNAL_TRACES, "http/protobuf"): "opentelemetry.exporter.otlp.proto.http.trace_exporter:OTLPSpanExporter",
    (SIGNAL_METRICS, "grpc"): "opentelemetry.exporter.otlp.proto.grpc.metric_exporter:OTLPMetricExporter",
    (SIGNAL_METRICS, "http/protobuf"): "opentelemetry.exporter.otlp.proto.http.metric_exporter:OTLPMetricExporter",
}
"""The SDK's OTLP exporter class per signal and protocol, imported only when chosen."""

_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
)
"""The OTLP exporters' loggers: each complains of every failed attempt, so a dead collector is thinned here."""
_HTTP_DEFAULT_ENDPOINT = "http://localhost:4318"
"""Where the OTLP/HTTP exporters send when no endpoint is set (OpenTelemetry's exporter specification)."""
_CUMULATIVE = AggregationTemporality.CUMULATIVE
_DELTA = AggregationTemporality.DELTA
_TEMPORALITY_PREFERENCES = {
    "cumulative": {},
    "delta": {Counter: _DELTA, Histogram: _DELTA, ObservableCounter: _DELTA},
    "lowmemory": {Counter: _DELTA, Histogram: _DELTA},
}
"""OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, as the OpenTelemetry specification defines its values:
the instruments that report deltas (the rest stay cumulative)."""


def env(*names: str) -> str | None:
    """The first of the variables that is set and not empty."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def signal_variable(signal: str, setting: str) -> tuple[str, str]:
    """The signal-specific and the general OTEL_EXPORTER_OTLP_* variable for a setting, in precedence order."""
    return f"OTEL_EXPORTER_OTLP_{signal.upper()}_{setting}", f"OTEL_EXPORTER_OTLP_{setting}"


class TelemetryHealth(logging.Filter):
    """Counts dropped spans and failed exports, and lets one complaint through per interval.

    Every drop is counted by the code that drops: the mount's shipper (socket
    full, export process gone), the export process's queue (full) and the
    exporter wrappers (``CountingSpanExporter``, ``CountingMetricExporter``:
    an export that failed loses its batch).  As a logging filter on the OTLP
    exporters' loggers it only thins their complaints, by logger, never by
    reading them, so a dead collector costs a log line per interval, not a
    flood.  The mount's span export runs in its own process
    (``tracing.shipper``), which reports its counts here.
    """

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self.dropped_spans = 0
        self.export_failures = {SIGNAL_TRACES: 0, SIGNAL_METRICS: 0}
        self._last: dict[str, float] = {}

    def install(self) -> None:
        """Attach to the OTLP exporters' loggers; ``uninstall`` undoes it."""
        for name in _EXPORTER_LOGGERS:
            logging.getLogger(name).addFilter(self)

    def uninstall(self) -> None:
        for name in _EXPORTER_LOGGERS:
            logging.getLogger(name).removeFilter(self)

    def failed_export(self, signal: str, spans: int = 0) -> None:
        """Count an export that failed; for traces, the ``spans`` it carried are dropped with it."""
        self.export_failures[signal] += 1
        self.dropped_spans += spans

    def due(self, key: str) -> bool:
        """Whether a complaint of this kind may be logged now: one per ``interval``."""
        now = time.monotonic()
        if now - self._last.get(key, -self.interval) < self.interval:
            return False
        self._last[key] = now
        return True

    def summary(self) -> str:
        return f"so far: {self.dropped_spans} spans dropped, export failures: {self.export_failures}"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        if not self.due(record.name):
            return False
        record.msg = f"{record.getMessage()} ({self.summary()})"
        record.args = ()
        return True


class CountingSpanExporter(SpanExporter):
    """Passes spans on and counts the exports that failed."""

    def __init__(self, inner: SpanExporter, health: TelemetryHealth) -> None:
        self._inner = inner
        self._health = health

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        if result is not SpanExportResult.SUCCESS:
            self._health.failed_export(SIGNAL_TRACES, len(spans))
        return result

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self._inner.shutdown()


class CountingMetricExporter(MetricExporter):
    """Passes metrics on and counts failed exports.

    ``temporality`` must be what the inner exporter was built with
    (``metric_temporality``): the reader asks this wrapper, not the inner one.
    """

    def __init__(
        self, inner: MetricExporter, health: TelemetryHealth, temporality: dict[type, AggregationTemporality]
    ) -> None:
        super().__init__(preferred_temporality=temporality)
        self._inner = inner
        self._health = health

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:
            log.exception("the metric exporter failed")
            result = MetricExportResult.FAILURE
        if result is not MetricExportResult.SUCCESS:
            self._health.failed_export(SIGNAL_METRICS)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def metric_temporality() -> dict[type, AggregationTemporality]:
    """The temporality per instrument that OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE asks for.

    Decided here and handed to the OTLP metric exporter, so the interposer knows
    what it asked for without reading the exporter's private state.
    """
    preference = (env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE") or "cumulative").strip().lower()
    chosen = _TEMPORALITY_PREFERENCES.get(preference)
    if chosen is None:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: {preference!r} is not supported; "
            f"allowed: {', '.join(_TEMPORALITY_PREFERENCES)}"
        )
    return {instrument: chosen.get(instrument, _CUMULATIVE) for instrument in (Counter, Histogram, ObservableCounter)}


def _http_destination(signal: str, endpoint: str | None) -> str:
    """Where an OTLP/HTTP exporter sends, by the specification's rules for the endpoint variables."""
    if endpoint is not None:
        return endpoint
    specific, general = signal_variable(signal, "ENDPOINT")
    if env(specific):
        return str(env(specific))
    return f"{(env(general) or _HTTP_DEFAULT_ENDPOINT).rstrip('/')}/v1/{signal}"


def otlp_exporter(signal: str, section: OtlpSection, field_prefix: str, **options: Any) -> tuple[Any, str]:
    """The SDK's OTLP exporter for a signal (built with ``options`` too), and a description of where it sends.

    Unset endpoint and headers are left to the SDK, which reads the signal's
    OTEL_EXPORTER_OTLP_* variables (and for HTTP appends ``/v1/<signal>`` to a
    general endpoint); an explicit HTTP endpoint gets that path here.
    """
    protocol = section.protocol or env(*signal_variable(signal, "PROTOCOL")) or "grpc"
    spec = _OTLP_EXPORTERS.get((signal, protocol))
    if spec is None:
        variables = " / ".join(signal_variable(signal, "PROTOCOL"))
        raise ConfigError(
            f"{field_prefix}.protocol (or {variables}): {protocol!r} is not supported; allowed: grpc, http/protobuf"
        )
    module, _, name = spec.partition(":")
    exporter_class = getattr(importlib.import_module(module), name)
    endpoint = section.endpoint
    if protocol == "grpc":
        target = endpoint or env(*signal_variable(signal, "ENDPOINT")) or "localhost:4317"
        exporter = exporter_class(endpoint=endpoint, headers=section.headers or None, timeout=5, **options)
        return exporter, f"otlp/grpc {target}"
    if endpoint is not None and not endpoint.rstrip("/").endswith(f"/v1/{signal}"):
        endpoint = endpoint.rstrip("/") + f"/v1/{signal}"
    exporter = exporter_class(endpoint=endpoint, headers=section.headers or None, timeout=5, **options)
    return exporter, f"otlp/http {_http_destination(signal, endpoint)}"


def build_resource(mountpoint: Path, backing: Path, volume_id: str | None) -> Resource:
    """Service, instance, host, mount and (in a pod) k8s attributes; OTEL_RESOURCE_ATTRIBUTES merge in."""
    attributes: dict[str, str] = {
        "service.instance.id": str(uuid.uuid4()),
        "host.name": socket.gethostname(),
        RESOURCE_MOUNTPOINT: str(mountpoint),
        RESOURCE_BACKING: str(backing),
    }
    if volume_id:
        attributes[RESOURCE_VOLUME_ID] = volume_id
    for attribute, variable in K8S_ENVIRONMENT.items():
        if os.environ.get(variable):
            attributes[attribute] = os.environ[variable]
    resource = Resource.create(attributes)
    if not env("OTEL_SERVICE_NAME") and "service.name=" not in (env("OTEL_RESOURCE_ATTRIBUTES") or ""):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME_DEFAULT}))
    return resource
