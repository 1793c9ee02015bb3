"""The embedded default exporter: spans as OTLP/JSON lines in a local file.

Each line is one ``ExportTraceServiceRequest`` in the OTLP/JSON encoding (ids
in hex, enums as integers), so the file can be searched locally
(``interposer traces``) and replayed into any collector later
(``interposer traces replay``).  The file is bounded: past ``max_bytes`` it is
rotated to ``<file>.1``, replacing the previous rotation.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _recode_ids(request: dict[str, Any], convert: Any) -> None:
    for resource_spans in request.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for holder in (span, *span.get("links", [])):
                    for field in _ID_FIELDS:
                        if holder.get(field):
                            holder[field] = convert(holder[field])


def to_otlp_json(request: ExportTraceServiceRequest) -> str:
    """One request as an OTLP/JSON line: protobuf's JSON mapping, with ids in hex as OTLP requires."""
    data = json_format.MessageToDict(request, use_integers_for_enums=True)
    _recode_ids(data, lambda value: base64.b64decode(value).hex())
    return json.dumps(data, separators=(",", ":"))


def from_otlp_json(line: str) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON line back into a protobuf request (for replay)."""
    data = json.loads(line)
    _recode_ids(data, lambda value: base64.b64encode(bytes.fromhex(value)).decode())
    request = ExportTraceServiceRequest()
    json_format.ParseDict(data, request)
    return request


class SpanFileExporter(SpanExporter):
    """Appends each batch as one OTLP/JSON line; rotates the file past ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        line = to_otlp_json(encode_spans(spans)) + "\n"
        with self._lock:
            try:
                if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
                    self.path.replace(self.path.with_name(self.path.name + ".1"))
                with self.path.open("a") as handle:
                    handle.write(line)
            except OSError:
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def read_requests(path: Path) -> Iterator[dict[str, Any]]:
    """Every request in a span file (and its rotation, oldest first), as OTLP/JSON dicts."""
    for candidate in (path.with_name(path.name + ".1"), path):
        if candidate.exists():
            with candidate.open() as handle:
                for line in handle:
                    if line.strip():
                        yield json.loads(line)
