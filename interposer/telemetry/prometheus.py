"""The Prometheus scrape endpoint, with exemplars on the request histograms' buckets.

The SDK's Prometheus reader translates the instruments the SDK aggregates.
The request histograms (``histogram.py``) never pass through the SDK's
aggregation, so they are served by a collector of their own in the same
registry, which writes them as Prometheus histograms with the names and
labels of ``names.Instrument`` and attaches each bucket's exemplar, so an
OpenMetrics scrape (what Prometheus asks for) carries the trace id of a
request that fell in that bucket.  Both use public interfaces only: the
reader's constructor and prometheus_client's collector protocol.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import socket
import threading
import time
from collections.abc import Iterator
from itertools import chain
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.samples import Exemplar

from ..config import ConfigError
from ..layers.metrics.histogram import HistogramSource, RequestHistogram
from ..names import RESOURCE_LABELS, prometheus_label, prometheus_unit

DEFAULT_PORT = 9464
"""The port OpenTelemetry specifies for the Prometheus exporter."""


class RequestHistogramCollector:
    """Serves the request histograms as Prometheus histograms, cumulative, exemplars on their buckets."""

    def __init__(self, source: HistogramSource) -> None:
        self._source = source
        attributes = source.resource.attributes
        self._resource_labels = {
            prometheus_label(key): str(attributes[key]) for key in RESOURCE_LABELS if key in attributes
        }

    def collect(self) -> Iterator[Metric]:
        now = time.time_ns()
        for histogram in self._source.histograms:
            family = self._family(histogram, now)
            if family is not None:
                yield family

    def _family(self, histogram: RequestHistogram, now: int) -> HistogramMetricFamily | None:
        points = [series.point(histogram.started, now, None) for series in list(histogram.series.values())]
        if not points:
            return None
        rows = [
            {
                **self._resource_labels,
                **{prometheus_label(key): str(value) for key, value in (point.attributes or {}).items()},
            }
            for point in points
        ]
        keys = sorted(set(chain.from_iterable(rows)))
        instrument = histogram.instrument
        family = HistogramMetricFamily(
            instrument.prometheus_name, instrument.description, labels=keys, unit=prometheus_unit(instrument.unit)
        )
        for point, labels in zip(points, rows, strict=True):
            exemplars: dict[int, Exemplar] = {}
            for sampled in point.exemplars:
                if sampled.trace_id is None or sampled.span_id is None:
                    continue
                exemplars[bisect.bisect_left(point.explicit_bounds, sampled.value)] = Exemplar(
                    {"trace_id": format(sampled.trace_id, "032x"), "span_id": format(sampled.span_id, "016x")},
                    sampled.value,
                    sampled.time_unix_nano / 1e9,
                )
            buckets: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
            cumulative = 0
            for index, (bound, count) in enumerate(
                zip(chain(point.explicit_bounds, ["+Inf"]), point.bucket_counts, strict=True)
            ):
                cumulative += count
                exemplar = exemplars.get(index)
                buckets.append((str(bound), cumulative) if exemplar is None else (str(bound), cumulative, exemplar))
            family.add_metric([labels.get(key, "") for key in keys], buckets, point.sum)
        return family


class PrometheusEndpoint:
    """The HTTP server Prometheus scrapes, on a loopback address unless configured otherwise."""

    def __init__(self, source: HistogramSource, host: str, port: int, *, port_is_default: bool) -> None:
        registry = CollectorRegistry(auto_describe=False)
        self.reader = PrometheusMetricReader(
            scope_info_enabled=False, registry=registry, resource_attribute_filter=RESOURCE_LABELS.__contains__
        )
        registry.register(RequestHistogramCollector(source))
        self._server, self._thread = self._listen(registry, host, port, port_is_default)
        bound_host, bound_port = self._server.server_address[:2]
        self.address = f"http://{_url_host(str(bound_host))}:{bound_port}/metrics"
        """Where Prometheus scrapes this mount; with the default port taken (another mount), a free one, so the
        mount names it in its first log line and in ``ctl status``."""

    @staticmethod
    def _listen(
        registry: CollectorRegistry, host: str, port: int, port_is_default: bool
    ) -> tuple[ThreadingWSGIServer, threading.Thread]:
        try:
            return _serve(registry, host, port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and port_is_default:
                return _serve(registry, host, 0)
            raise ConfigError(
                "metrics.prometheus_host / metrics.prometheus_port (or OTEL_EXPORTER_PROMETHEUS_HOST / "
                f"OTEL_EXPORTER_PROMETHEUS_PORT): cannot listen on {host}:{port}: {exc.strerror}"
            ) from None

    def close(self) -> None:
        """Stop serving.  The server waits for connections, not on a timer, so it hears ``shutdown`` at its next
        connection: close makes one, as often as it takes."""
        stopping = threading.Thread(target=self._server.shutdown, name="metrics-endpoint-stop")
        stopping.start()
        host, port = self._server.server_address[:2]
        while stopping.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection((str(host), int(port)), timeout=1).close()
            stopping.join(0.05)
        self._server.server_close()
        self._thread.join(timeout=5)


class _QuietHandler(WSGIRequestHandler):
    """Scrapes are not logged."""

    def log_message(self, format: str, *args: Any) -> None:
        return None


def _serve(registry: CollectorRegistry, host: str, port: int) -> tuple[ThreadingWSGIServer, threading.Thread]:
    """prometheus_client's WSGI server for ``registry`` on ``host:port``, in a thread that sleeps until a
    connection comes (``start_http_server`` wakes it twice a second to look for a shutdown: an idle mount's only
    CPU, once the rest sleeps)."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]

    class Server(ThreadingWSGIServer):
        address_family = family

    server = make_server(str(address[0]), port, make_wsgi_app(registry), Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": None}, daemon=True)
    thread.name = "metrics-endpoint"
    thread.start()
    return server, thread


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
