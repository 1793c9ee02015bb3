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
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def from_otlp_json(line: str) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON line back into a protobuf request (for replay).

    OTLP/JSON writes ids in hex where protobuf's JSON mapping expects base64.
    """
    data = json.loads(line)
    for resource_spans in data.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for holder in (span, *span.get("links", [])):
                    for field in _ID_FIELDS:
                        if holder.get(field):
                            holder[field] = base64.b64encode(bytes.fromhex(holder[field])).decode()
    request = ExportTraceServiceRequest()
    json_format.ParseDict(data, request)
    return request


def _any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_any_value(item) for item in value]}}
    return {"stringValue": str(value)}


class _Fragments:
    """Encoded ``{"key":…,"value":…}`` fragments, cached: attribute values repeat across spans.

    Bounded: the cache is emptied when it reaches ``capacity`` entries.
    """

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._cache: dict[tuple[str, Any], str] = {}
        self._capacity = capacity

    def __call__(self, attributes: Any) -> str:
        cache = self._cache
        parts = []
        for item in (attributes or {}).items():
            try:
                fragment = cache.get(item)
            except TypeError:  # an unhashable value (a list)
                fragment = None
            if fragment is None:
                fragment = json.dumps({"key": item[0], "value": _any_value(item[1])}, separators=(",", ":"))
                if isinstance(item[1], (str, int, float, bool)):
                    if len(cache) >= self._capacity:
                        cache.clear()
                    cache[item] = fragment
            parts.append(fragment)
        return ",".join(parts)


def _span_json(span: ReadableSpan, fragments: _Fragments) -> str:
    context = span.context
    assert context is not None
    parts = [
        f'{{"traceId":"{context.trace_id:032x}","spanId":"{context.span_id:016x}"',
        f',"parentSpanId":"{span.parent.span_id:016x}"' if span.parent is not None else "",
        # OTLP counts span kinds from SPAN_KIND_UNSPECIFIED = 0
        f',"name":{json.dumps(span.name)},"kind":{span.kind.value + 1}',
        f',"startTimeUnixNano":"{span.start_time}","endTimeUnixNano":"{span.end_time}"',
        f',"attributes":[{fragments(span.attributes)}]',
    ]
    if span.events:
        events = ",".join(
            f'{{"timeUnixNano":"{event.timestamp}","name":{json.dumps(event.name)},'
            f'"attributes":[{fragments(event.attributes)}]}}'
            for event in span.events
        )
        parts.append(f',"events":[{events}]')
    if span.links:
        links = ",".join(
            f'{{"traceId":"{link.context.trace_id:032x}","spanId":"{link.context.span_id:016x}"}}'
            for link in span.links
        )
        parts.append(f',"links":[{links}]')
    if span.status.status_code is not StatusCode.UNSET:
        status = {"code": span.status.status_code.value, "message": span.status.description or ""}
        parts.append(f',"status":{json.dumps(status)}')
    parts.append("}")
    return "".join(parts)


def encode_json(spans: Sequence[ReadableSpan], fragments: _Fragments | None = None) -> str:
    """A batch as one OTLP/JSON ``ExportTraceServiceRequest`` line, built straight from the spans.

    Going through the SDK's protobuf encoder and protobuf's JSON mapping cost
    about 80 us per span, taken from the request path through the GIL; this
    costs a few (docs/performance.md).
    """
    fragments = fragments or _Fragments()
    scopes: dict[tuple[int, str, str], tuple[Any, Any, list[str]]] = {}
    for span in spans:
        scope = span.instrumentation_scope
        key = (id(span.resource), scope.name if scope else "", (scope.version or "") if scope else "")
        scopes.setdefault(key, (span.resource, scope, []))[2].append(_span_json(span, fragments))
    resources: dict[int, tuple[Any, list[str]]] = {}
    for resource, scope, encoded in scopes.values():
        scope_json = json.dumps({"name": scope.name, "version": scope.version or ""} if scope else {})
        resources.setdefault(id(resource), (resource, []))[1].append(
            f'{{"scope":{scope_json},"spans":[{",".join(encoded)}]}}'
        )
    body = ",".join(
        f'{{"resource":{{"attributes":[{fragments(resource.attributes)}]}},"scopeSpans":[{",".join(scope_parts)}]}}'
        for resource, scope_parts in resources.values()
    )
    return f'{{"resourceSpans":[{body}]}}'


class SpanFileExporter(SpanExporter):
    """Appends each batch as one OTLP/JSON line; rotates the file past ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._fragments = _Fragments()
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        line = encode_json(spans, self._fragments) + "\n"
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
