"""Building the metric export pipeline from the config and the standard OTEL_* environment variables.

The embedded default serves a Prometheus endpoint on 127.0.0.1:9464; with an
OTLP endpoint set, metrics are pushed to it instead; with both exporters
chosen, one SDK aggregation feeds both readers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from .. import __version__
from ..config import ConfigError, MetricsConfig
from ..layers.metrics.histogram import DeltaState, HistogramSource, RequestHistogram
from ..names import DURATION_BUCKETS, OPERATION_DURATION, SCOPE_NAME, SIGNAL_METRICS, THROTTLE_WAIT
from .prometheus import DEFAULT_PORT, PrometheusEndpoint
from .shared import (
    CountingMetricExporter,
    TelemetryHealth,
    env,
    metric_temporality,
    otlp_exporter,
    signal_variable,
)

log = logging.getLogger(__name__)

_KNOWN_EXPORTERS = ("otlp", "prometheus")
_DEFAULT_EXPORT_INTERVAL = 10.0


class WithRequestHistograms(MetricExporter):
    """Adds the request histograms to every export of the SDK's periodic push, in the temporality it asked for.

    A wrapper of the exporter, not a reader subclass: ``export`` is the public
    interface through which each collection passes.
    """

    def __init__(
        self, inner: MetricExporter, source: HistogramSource, temporality: dict[type, AggregationTemporality]
    ) -> None:
        super().__init__(preferred_temporality=temporality)
        self._inner = inner
        self._source = source
        self._delta = DeltaState() if temporality[Histogram] is AggregationTemporality.DELTA else None

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        return self._inner.export(self._source.added_to(metrics_data, self._delta), timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


@dataclass
class MetricsSetup:
    """The meter and request histograms the layer records into, and where the measurements go."""

    provider: MeterProvider
    meter: Meter
    duration: RequestHistogram
    throttle_wait: RequestHistogram
    destinations: dict[str, str] = field(default_factory=dict)
    """Exporter name -> where it sends (OTLP) or serves (Prometheus)."""
    endpoint: PrometheusEndpoint | None = None

    def shutdown(self, timeout: float) -> None:
        """Push the last measurements (for ``timeout`` seconds at most) and stop the export thread and endpoint."""
        self.provider.shutdown(timeout_millis=timeout * 1000)
        if self.endpoint is not None:
            self.endpoint.close()


def exporter_names(config: MetricsConfig) -> tuple[str, ...]:
    """Which exporters run: the config, else OTEL_METRICS_EXPORTER, else otlp with an endpoint, else prometheus."""
    if config.exporters is not None:
        return tuple(dict.fromkeys(config.exporters))
    variable = env("OTEL_METRICS_EXPORTER")
    if variable is not None:
        chosen = tuple(dict.fromkeys(name.strip().lower() for name in variable.split(",") if name.strip()))
        unknown = [name for name in chosen if name not in (*_KNOWN_EXPORTERS, "none")]
        if unknown:
            raise ConfigError(
                f"OTEL_METRICS_EXPORTER: {', '.join(unknown)} not supported; allowed: otlp, prometheus, none"
            )
        return tuple(name for name in chosen if name != "none")
    if config.endpoint or env(*signal_variable(SIGNAL_METRICS, "ENDPOINT")):
        return ("otlp",)
    return ("prometheus",)


def _export_interval(config: MetricsConfig) -> float:
    if config.export_interval is not None:
        return config.export_interval
    variable = env("OTEL_METRIC_EXPORT_INTERVAL")
    if variable is None:
        return _DEFAULT_EXPORT_INTERVAL
    try:
        milliseconds = float(variable)
    except ValueError:
        milliseconds = 0
    if milliseconds <= 0:
        raise ConfigError(f"OTEL_METRIC_EXPORT_INTERVAL: {variable!r} is not a positive number of milliseconds")
    return milliseconds / 1000


def _prometheus_endpoint(config: MetricsConfig, source: HistogramSource) -> PrometheusEndpoint:
    host = config.prometheus_host or env("OTEL_EXPORTER_PROMETHEUS_HOST") or "127.0.0.1"
    port_text = env("OTEL_EXPORTER_PROMETHEUS_PORT")
    if config.prometheus_port is not None:
        return PrometheusEndpoint(source, host, config.prometheus_port, port_is_default=False)
    if port_text is not None:
        if not port_text.isdigit() or int(port_text) > 65535:
            raise ConfigError(f"OTEL_EXPORTER_PROMETHEUS_PORT: {port_text!r} is not a port; allowed: 0 to 65535")
        return PrometheusEndpoint(source, host, int(port_text), port_is_default=False)
    return PrometheusEndpoint(source, host, DEFAULT_PORT, port_is_default=True)


def build_metrics(config: MetricsConfig, resource: Resource, health: TelemetryHealth) -> MetricsSetup:
    """Readers for the chosen exporters on one meter provider; the OTLP push runs in the SDK's thread."""
    names = exporter_names(config)
    interval = _export_interval(config)
    scope = InstrumentationScope(SCOPE_NAME, __version__)
    duration = RequestHistogram(OPERATION_DURATION, DURATION_BUCKETS)
    throttle_wait = RequestHistogram(THROTTLE_WAIT, DURATION_BUCKETS)
    source = HistogramSource((duration, throttle_wait), resource, scope)
    readers: list[MetricReader] = []
    destinations: dict[str, str] = {}
    endpoint = None
    if "otlp" in names:
        temporality = metric_temporality()
        exporter, destinations["otlp"] = otlp_exporter(
            SIGNAL_METRICS, config, "metrics", preferred_temporality=temporality
        )
        counted = CountingMetricExporter(exporter, health, temporality)
        readers.append(
            PeriodicExportingMetricReader(
                WithRequestHistograms(counted, source, temporality),
                export_interval_millis=interval * 1000,
                export_timeout_millis=min(interval, 10.0) * 1000,
            )
        )
    if "prometheus" in names:
        endpoint = _prometheus_endpoint(config, source)
        destinations["prometheus"] = endpoint.address
        readers.append(endpoint.reader)
    provider = MeterProvider(metric_readers=readers, resource=resource)
    meter = provider.get_meter(scope.name, scope.version)
    return MetricsSetup(provider, meter, duration, throttle_wait, destinations, endpoint)
