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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import SpanKind

from ..layers.tracing.records import SpanData

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
_dumps = json.JSONEncoder(separators=(",", ":")).encode
"""One encoder, made once: ``json.dumps`` with options builds a new one per call."""
_string: Callable[[str], str] = json.encoder.encode_basestring_ascii
"""A JSON string literal, by the C function ``json`` itself uses for ``str``."""


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


def _any_value(value: Any) -> str:
    """An attribute value as OTLP/JSON ``AnyValue`` (64-bit integers as strings)."""
    kind = type(value)
    if kind is str:
        return '{"stringValue":' + _string(value) + "}"
    if kind is bool:
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if kind is int:
        return '{"intValue":"' + str(value) + '"}'
    if kind is float:
        return '{"doubleValue":' + _dumps(value) + "}"
    if isinstance(value, (list, tuple)):
        return '{"arrayValue":{"values":[' + ",".join(_any_value(item) for item in value) + "]}}"
    return '{"stringValue":' + _string(str(value)) + "}"


class _Attributes:
    """Encodes attribute lists, caching each ``{"key":…,"value":…}`` fragment (bounded).

    Many attribute values repeat from span to span (operation, process, user),
    so their fragments are cached; the rest are encoded directly, without a
    dict per attribute for ``json.dumps`` to walk.
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
                fragment = '{"key":' + _string(item[0]) + ',"value":' + _any_value(item[1]) + "}"
                if type(item[1]) is not list:
                    if len(cache) >= self._capacity:
                        cache.clear()
                    cache[item] = fragment
            parts.append(fragment)
        return ",".join(parts)


_SPAN_KINDS = {SpanKind.INTERNAL: 1, SpanKind.SERVER: 2}
"""OTLP's SPAN_KIND_INTERNAL and SPAN_KIND_SERVER (the SDK's enum counts from 0, OTLP's from 1 for UNSPECIFIED)."""
_STATUS_ERROR = 2
"""OTLP's STATUS_CODE_ERROR."""


def _span_json(span: SpanData, attributes: _Attributes) -> str:
    parts = [
        f'{{"traceId":"{span.trace_id:032x}","spanId":"{span.span_id:016x}"',
        f',"parentSpanId":"{span.parent_id:016x}"' if span.parent_id else "",
        f',"name":{_string(span.name)},"kind":{_SPAN_KINDS[span.kind]}',
        f',"startTimeUnixNano":"{span.start}","endTimeUnixNano":"{span.end}"',
        f',"attributes":[{attributes(span.attributes)}]',
    ]
    if span.events:
        events = ",".join(
            f'{{"timeUnixNano":"{span.end}","name":{_string(name)},"attributes":[{attributes(event_attributes)}]}}'
            for name, event_attributes in span.events
        )
        parts.append(f',"events":[{events}]')
    if span.link is not None:
        parts.append(f',"links":[{{"traceId":"{span.link[0]:032x}","spanId":"{span.link[1]:016x}"}}]')
    if span.failure is not None:
        parts.append(f',"status":{{"code":{_STATUS_ERROR},"message":{_string(span.failure)}}}')
    parts.append("}")
    return "".join(parts)


def rotated(path: Path) -> Path:
    """Where a span file's older half goes when it passes ``max_bytes``: ``<file>.1``."""
    return path.with_name(path.name + ".1")


class SpanFile:
    """Appends batches of spans as OTLP/JSON lines, straight from ``SpanData``; rotates past ``max_bytes``.

    The SDK's protobuf encoder with protobuf's JSON mapping cost about 80 µs a
    span, an SDK span and a generic encoder still about 8; this costs about 2
    (docs/performance.md), which is what lets the export process keep up with
    every operation at 100% sampling.
    """

    def __init__(self, path: Path, max_bytes: int, resource: dict[str, Any], scope: tuple[str, str]) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._attributes = _Attributes()
        self._head = (
            f'{{"resourceSpans":[{{"resource":{{"attributes":[{self._attributes(resource)}]}},'
            f'"scopeSpans":[{{"scope":{_dumps({"name": scope[0], "version": scope[1]})},"spans":['
        )
        # Spans name paths and commands: the file's directory, if made here, is private (0700); the root of the
        # kept default files is made private by the mount before it starts this process (kept_spans.prepare).
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with path.open("a"):  # a file that cannot be written is a configuration error, found before mounting
            pass

    def encode(self, spans: Sequence[SpanData]) -> str:
        """One ``ExportTraceServiceRequest`` line: one resource, one scope, the spans."""
        attributes = self._attributes
        return self._head + ",".join(_span_json(span, attributes) for span in spans) + "]}]}]}\n"

    def write(self, spans: Sequence[SpanData]) -> bool:
        """Append the batch; False if the file could not be written."""
        line = self.encode(spans)
        try:
            if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
                self.path.replace(rotated(self.path))
            with self.path.open("a") as handle:
                handle.write(line)
        except OSError:
            return False
        return True
