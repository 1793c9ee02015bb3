"""The Prometheus scrape endpoint, with exemplars on histogram buckets.

opentelemetry-exporter-prometheus translates names and types but drops
exemplars.  This reader keeps them: it notes each
histogram bucket's exemplar as the SDK hands over its data, and the
endpoint's collector attaches them to the translated ``_bucket`` samples, so
an OpenMetrics scrape (what Prometheus asks for) carries the trace id of a
request that fell in that bucket.
"""

from __future__ import annotations

import bisect
import errno
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIServer

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.exporter.prometheus._mapping import map_unit, sanitize_attribute, sanitize_full_name
from opentelemetry.sdk.metrics.export import Histogram, MetricsData
from opentelemetry.sdk.metrics.export import Metric as OtelMetric
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar

from ...config import ConfigError
from ...names import RESOURCE_LABELS, prometheus_label
from .histogram import HistogramSource

DEFAULT_PORT = 9464
"""The port OpenTelemetry specifies for the Prometheus exporter."""

_LabelKey = frozenset[tuple[str, str]]
_NOT_ATTRIBUTES = frozenset({"le", *(prometheus_label(attribute) for attribute in RESOURCE_LABELS)})
"""Labels of a bucket sample that are not the data point's own attributes."""


class ExemplarPrometheusReader(PrometheusMetricReader):
    """The SDK's Prometheus reader, with the request histograms added and their exemplars remembered."""

    def __init__(self, source: HistogramSource) -> None:
        self.translated = CollectorRegistry(auto_describe=False)
        super().__init__(
            scope_info_enabled=False,
            registry=self.translated,
            resource_attribute_filter=RESOURCE_LABELS.__contains__,
        )
        self.exemplars: dict[str, dict[_LabelKey, dict[str, Exemplar]]] = {}
        self._source = source

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        if metrics_data is not None:
            metrics_data = self._source.added_to(metrics_data, None)
            for resource_metrics in metrics_data.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        if isinstance(metric.data, Histogram):
                            self._note_exemplars(_family_name(metric), metric.data)
        super()._receive_metrics(metrics_data, timeout_millis, **kwargs)

    def _note_exemplars(self, family: str, data: Histogram) -> None:
        by_labels = self.exemplars.setdefault(family, {})
        for point in data.data_points:
            if not point.exemplars:
                continue
            labels: _LabelKey = frozenset(
                (sanitize_attribute(key), str(value)) for key, value in (point.attributes or {}).items()
            )
            buckets = by_labels.setdefault(labels, {})
            bounds = list(point.explicit_bounds)
            for exemplar in point.exemplars:
                if exemplar.trace_id is None or exemplar.span_id is None:
                    continue
                index = bisect.bisect_left(bounds, exemplar.value)
                bucket = str(bounds[index]) if index < len(bounds) else "+Inf"
                buckets[bucket] = Exemplar(
                    {"trace_id": format(exemplar.trace_id, "032x"), "span_id": format(exemplar.span_id, "016x")},
                    exemplar.value,
                    exemplar.time_unix_nano / 1e9,
                )


class ExemplarCollector:
    """What the endpoint serves: the reader's translated metrics, with exemplars on the buckets."""

    def __init__(self, reader: ExemplarPrometheusReader) -> None:
        self._reader = reader
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            families = list(self._reader.translated.collect())
            for family in families:
                if family.type == "histogram":
                    self._attach(family)
            return iter(families)

    def _attach(self, family: Metric) -> None:
        by_labels = self._reader.exemplars.get(family.name)
        if not by_labels:
            return
        for index, sample in enumerate(family.samples):
            if not sample.name.endswith("_bucket"):
                continue
            labels = frozenset((key, value) for key, value in sample.labels.items() if key not in _NOT_ATTRIBUTES)
            exemplar = by_labels.get(labels, {}).get(sample.labels["le"])
            if exemplar is not None:
                family.samples[index] = sample._replace(exemplar=exemplar)


class PrometheusEndpoint:
    """The HTTP server Prometheus scrapes, on a loopback address unless configured otherwise."""

    def __init__(self, source: HistogramSource, host: str, port: int, *, port_is_default: bool) -> None:
        self.reader = ExemplarPrometheusReader(source)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ExemplarCollector(self.reader))
        self._server, self._thread = self._listen(registry, host, port, port_is_default)
        bound_host, bound_port = self._server.server_address[:2]
        self.address = f"http://{_url_host(str(bound_host))}:{bound_port}/metrics"
        """Where Prometheus scrapes this mount; with the default port taken (another mount), a free one, so the
        mount names it in its first log line and in ``ctl status``."""

    @staticmethod
    def _listen(
        registry: CollectorRegistry, host: str, port: int, port_is_default: bool
    ) -> tuple[WSGIServer, threading.Thread]:
        try:
            return start_http_server(port, host, registry)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and port_is_default:
                return start_http_server(0, host, registry)
            raise ConfigError(
                "metrics.prometheus_host / metrics.prometheus_port (or OTEL_EXPORTER_PROMETHEUS_HOST / "
                f"OTEL_EXPORTER_PROMETHEUS_PORT): cannot listen on {host}:{port}: {exc.strerror}"
            ) from None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _family_name(metric: OtelMetric) -> str:
    """The family name the exporter gives a metric: sanitised, the unit appended as prometheus_client does."""
    name, unit = sanitize_full_name(metric.name), map_unit(metric.unit or "")
    return f"{name}_{unit}" if unit and not name.endswith("_" + unit) else name


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
