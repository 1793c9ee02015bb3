"""Building the span export pipeline from the config and the standard OTEL_* environment variables.

Explicit configuration wins; an unset field falls back to the OpenTelemetry
variable the SDK documents; the embedded default (no endpoint anywhere)
writes a local span file.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from ..config import ConfigError, TracingConfig
from ..names import RESOURCE_BACKING, RESOURCE_MOUNTPOINT, RESOURCE_VOLUME_ID, SERVICE_NAME_DEFAULT
from .spanfile import SpanFileExporter

log = logging.getLogger(__name__)

_K8S_ENVIRONMENT = {
    "k8s.pod.name": "K8S_POD_NAME",
    "k8s.pod.uid": "K8S_POD_UID",
    "k8s.namespace.name": "K8S_NAMESPACE_NAME",
    "k8s.node.name": "K8S_NODE_NAME",
}
"""Resource attributes filled from the pod's environment (the chart sets these by the Downward API)."""


class ThrottledTelemetryLog(logging.Filter):
    """Counts the SDK's per-span complaints (queue full, export failed) and lets one through per interval.

    A dead collector must cost dropped telemetry, counted and logged, never a
    flood of log lines: the SDK logs every dropped span.
    """

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self.dropped_spans = 0
        self.export_failures = 0
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Queue full" in message:
            self.dropped_spans += 1
            key = "drop"
        elif "export" in message.lower() and record.levelno >= logging.WARNING:
            self.export_failures += 1
            key = "export"
        else:
            return True
        now = time.monotonic()
        if now - self._last.get(key, -self.interval) < self.interval:
            return False
        self._last[key] = now
        record.msg = f"{message} (so far: {self.dropped_spans} spans dropped, {self.export_failures} export failures)"
        record.args = ()
        return True


@dataclass
class TracingSetup:
    """What the mount keeps of the tracing pipeline: the resource, where kept spans go, and health counters."""

    resource: Resource
    processor: SpanProcessor
    ratio: float
    health: ThrottledTelemetryLog
    exporter_name: str
    destination: str

    def shutdown(self) -> None:
        """Export what is queued and stop the export thread."""
        self.processor.shutdown()


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def sample_ratio(config: TracingConfig) -> float:
    """The configured ratio, else OTEL_TRACES_SAMPLER(_ARG), else 1."""
    if config.sample_ratio is not None:
        return config.sample_ratio
    sampler = (_env("OTEL_TRACES_SAMPLER") or "parentbased_always_on").lower()
    if sampler.endswith("always_off"):
        return 0.0
    if sampler.endswith("traceidratio"):
        try:
            return min(max(float(_env("OTEL_TRACES_SAMPLER_ARG") or "1"), 0.0), 1.0)
        except ValueError:
            log.warning("OTEL_TRACES_SAMPLER_ARG is not a number; sampling everything")
    return 1.0


def exporter_kind(config: TracingConfig) -> str:
    """'otlp', 'file' or 'none'."""
    if config.exporter is not None:
        return config.exporter
    chosen = (_env("OTEL_TRACES_EXPORTER") or "").split(",")[0].strip().lower()
    if chosen in ("otlp", "none"):
        return chosen
    if config.endpoint or _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        return "otlp"
    return "file"


def _otlp_exporter(config: TracingConfig) -> tuple[SpanExporter, str]:
    protocol = config.protocol or _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    headers = config.headers or None
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        grpc_exporter = GrpcExporter(endpoint=config.endpoint, headers=headers, timeout=5)
        target = config.endpoint or _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
        return grpc_exporter, f"otlp/grpc {target or 'localhost:4317'}"
    if protocol != "http/protobuf":
        raise ConfigError(
            f"tracing.protocol (or OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL): "
            f"{protocol!r} is not supported; allowed: grpc, http/protobuf"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    endpoint = config.endpoint
    if endpoint is not None and not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    http_exporter = HttpExporter(endpoint=endpoint, headers=headers, timeout=5)
    return http_exporter, f"otlp/http {http_exporter._endpoint}"


def build_resource(config: TracingConfig, mountpoint: Path, backing: Path) -> Resource:
    """Service, instance, host, mount and (in a pod) k8s attributes; OTEL_RESOURCE_ATTRIBUTES merge in."""
    attributes: dict[str, str] = {
        "service.instance.id": str(uuid.uuid4()),
        "host.name": socket.gethostname(),
        RESOURCE_MOUNTPOINT: str(mountpoint),
        RESOURCE_BACKING: str(backing),
    }
    if config.volume_id:
        attributes[RESOURCE_VOLUME_ID] = config.volume_id
    for attribute, variable in _K8S_ENVIRONMENT.items():
        if os.environ.get(variable):
            attributes[attribute] = os.environ[variable]
    resource = Resource.create(attributes)
    if not _env("OTEL_SERVICE_NAME") and "service.name=" not in (_env("OTEL_RESOURCE_ATTRIBUTES") or ""):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME_DEFAULT}))
    return resource


def build_tracing(config: TracingConfig, mountpoint: Path, backing: Path, default_file: Path) -> TracingSetup:
    """A bounded batch processor in front of the exporter; the tracing layer decides what is kept."""
    kind = exporter_kind(config)
    exporter: SpanExporter | None
    if kind == "otlp":
        exporter, destination = _otlp_exporter(config)
    elif kind == "file":
        path = config.file or default_file
        exporter, destination = SpanFileExporter(path, config.file_max_bytes), str(path)
    else:
        exporter, destination = None, "nowhere"
    health = ThrottledTelemetryLog()
    for name in (
        "opentelemetry.sdk._shared_internal",
        "opentelemetry.exporter.otlp.proto.grpc.exporter",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    ):
        logging.getLogger(name).addFilter(health)
    processor: SpanProcessor
    if exporter is None:
        processor = SpanProcessor()
    else:
        processor = BatchSpanProcessor(
            exporter,
            max_queue_size=config.max_queue_size,
            schedule_delay_millis=config.export_delay * 1000,
            max_export_batch_size=min(512, config.max_queue_size),
        )
    resource = build_resource(config, mountpoint, backing)
    return TracingSetup(resource, processor, sample_ratio(config), health, kind, destination)
