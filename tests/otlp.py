"""A real OTLP pipeline for tests: the rotel collector forwarding to gRPC receivers in the test."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from interposer.local.ports import free_port

from .conftest import require


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def _plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_plain(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


@dataclass
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    attributes: dict[str, Any]
    error: bool
    links: list[str]
    events: list[str]
    resource: dict[str, Any]


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace endpoint that keeps everything it is sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans: list[ReceivedSpan] = []

    def Export(  # noqa: N802 - the gRPC method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _plain(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            name=span.name,
                            attributes={a.key: _plain(a.value) for a in span.attributes},
                            error=span.status.code == 2,
                            links=[link.span_id.hex() for link in span.links],
                            events=[event.name for event in span.events],
                            resource=resource,
                        )
                    )
        with self._lock:
            self.spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)


@dataclass
class ReceivedPoint:
    """One data point: a sum's or gauge's value, or a histogram's count, sum and bucket bounds."""

    metric: str
    unit: str
    kind: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    value: float
    temporality: str = ""
    """'delta' or 'cumulative' for sums and histograms."""
    start: int = 0
    end: int = 0
    total: float = 0.0
    bounds: tuple[float, ...] = ()
    exemplar_trace_ids: tuple[str, ...] = ()


class MetricsReceiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    """An OTLP/gRPC metrics endpoint that keeps every export, in order of arrival."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.exports: list[list[ReceivedPoint]] = []

    def Export(  # noqa: N802 - the gRPC method name
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: grpc.ServicerContext
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        points = []
        for resource_metrics in request.resource_metrics:
            resource = {a.key: _plain(a.value) for a in resource_metrics.resource.attributes}
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data") or ""
                    data = getattr(metric, kind)
                    temporality = {1: "delta", 2: "cumulative"}.get(getattr(data, "aggregation_temporality", 0), "")
                    for point in data.data_points:
                        attributes = {a.key: _plain(a.value) for a in point.attributes}
                        if kind == "histogram":
                            received = ReceivedPoint(
                                metric.name,
                                metric.unit,
                                kind,
                                attributes=attributes,
                                resource=resource,
                                value=point.count,
                                temporality=temporality,
                                start=point.start_time_unix_nano,
                                end=point.time_unix_nano,
                                total=point.sum,
                                bounds=tuple(point.explicit_bounds),
                                exemplar_trace_ids=tuple(e.trace_id.hex() for e in point.exemplars),
                            )
                        else:
                            value = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
                            received = ReceivedPoint(
                                metric.name,
                                metric.unit,
                                kind,
                                attributes,
                                resource,
                                value,
                                temporality,
                                point.start_time_unix_nano,
                                point.time_unix_nano,
                            )
                        points.append(received)
        with self._lock:
            self.exports.append(points)
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def snapshot(self) -> list[list[ReceivedPoint]]:
        with self._lock:
            return list(self.exports)


@dataclass
class Collector:
    """rotel listening on loopback for OTLP gRPC and HTTP, forwarding to the receivers."""

    grpc_endpoint: str
    http_endpoint: str
    traces: TraceReceiver
    metrics: MetricsReceiver


def rotel_binary() -> str:
    try:
        import rotel
    except ImportError:
        require(False, "PyPI package rotel (the collector)")
    path = os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")
    require(os.access(path, os.X_OK), "rotel-agent binary inside the rotel package")
    return path


def run_collector(log_dir: Path) -> Iterator[Collector]:
    """Start the receiver and rotel; stop both afterwards."""
    receiver, metrics = TraceReceiver(), MetricsReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(metrics, server)  # type: ignore[no-untyped-call]
    receiver_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    grpc_port, http_port = free_port(), free_port()
    with (log_dir / "rotel.log").open("wb") as log:
        process = subprocess.Popen(
            [
                rotel_binary(),
                "start",
                f"--otlp-grpc-endpoint=127.0.0.1:{grpc_port}",
                f"--otlp-http-endpoint=127.0.0.1:{http_port}",
                "--exporter=otlp",
                f"--otlp-exporter-endpoint=http://127.0.0.1:{receiver_port}",
                "--otlp-exporter-protocol=grpc",
                "--batch-timeout=100ms",
            ],
            stdout=log,
            stderr=log,
        )
    try:
        wait_for_port(grpc_port)
        wait_for_port(http_port)
        yield Collector(f"http://127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}", receiver, metrics)
    finally:
        process.terminate()
        process.wait(timeout=20)
        server.stop(grace=None)
