"""Searching a local span file: filters, handle sessions as trees, and a summary.

For a person without Jaeger: ``interposer traces FILE`` reads the OTLP/JSON
lines the file exporter writes.
"""

from __future__ import annotations

import fnmatch
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..mount.kept_spans import KeptSpanFile
from ..names import (
    ATTR_ERROR_TYPE,
    ATTR_FILE_PATH,
    ATTR_OPERATION,
    ATTR_PID,
    ATTR_TRANSFERRED,
    RESOURCE_LABELS,
    SPAN_DIRECTORY_SESSION,
    SPAN_FILE_SESSION,
)
from .spanlines import read_requests

_STATUS_ERROR = 2


def _value(value: dict[str, Any]) -> Any:
    kind, raw = next(iter(value.items()))
    if kind == "intValue":
        return int(raw)
    if kind == "arrayValue":
        return [_value(item) for item in raw.get("values", [])]
    return raw


@dataclass
class SpanRecord:
    """One span read back from the file."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    error: bool
    events: list[str] = field(default_factory=list)
    event_attributes: list[dict[str, Any]] = field(default_factory=list)
    """Each event's attributes, in the order of ``events``."""

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def path(self) -> str:
        return str(self.attributes.get(ATTR_FILE_PATH, ""))

    @property
    def operation(self) -> str:
        return str(self.attributes.get(ATTR_OPERATION, self.name))

    def line(self) -> str:
        error = self.attributes.get(ATTR_ERROR_TYPE)
        parts = [f"{self.duration_ms:9.3f} ms", self.name, self.path]
        if ATTR_PID in self.attributes:
            parts.append(f"pid={self.attributes[ATTR_PID]}")
        if ATTR_TRANSFERRED in self.attributes:
            parts.append(f"bytes={self.attributes[ATTR_TRANSFERRED]}")
        if error:
            parts.append(f"ERROR {error}")
        parts.extend(f"event={event}" for event in self.events)
        return "  ".join(parts)


def load_spans(path: Path) -> list[SpanRecord]:
    """Every span in a span file and its rotation, in start order; ``SpanFileError`` if it is not one."""
    spans = []
    for line in read_requests(path):
        for resource_spans in line.request["resourceSpans"]:
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    spans.append(
                        SpanRecord(
                            trace_id=span["traceId"],
                            span_id=span["spanId"],
                            parent_id=span.get("parentSpanId", ""),
                            name=span["name"],
                            start_ns=int(span["startTimeUnixNano"]),
                            end_ns=int(span["endTimeUnixNano"]),
                            attributes={a["key"]: _value(a["value"]) for a in span.get("attributes", [])},
                            error=span.get("status", {}).get("code") == _STATUS_ERROR,
                            events=[event["name"] for event in span.get("events", [])],
                            event_attributes=[
                                {a["key"]: _value(a["value"]) for a in event.get("attributes", [])}
                                for event in span.get("events", [])
                            ],
                        )
                    )
    spans.sort(key=lambda record: record.start_ns)
    return spans


def resource_labels(path: Path) -> dict[str, str]:
    """The resource attributes that label the mount's series (``RESOURCE_LABELS``), as its span file records them."""
    for line in read_requests(path):
        for resource_spans in line.request["resourceSpans"]:
            resource = resource_spans.get("resource", {}).get("attributes", [])
            attributes = {item["key"]: _value(item["value"]) for item in resource}
            return {key: str(attributes[key]) for key in RESOURCE_LABELS if key in attributes}
    return {}


@dataclass(frozen=True)
class Query:
    """Filters; every one given must match."""

    path_glob: str | None = None
    operation: str | None = None
    pid: int | None = None
    error_type: str | None = None
    min_ms: float | None = None
    since_ns: int | None = None
    until_ns: int | None = None

    def matches(self, span: SpanRecord) -> bool:
        return (
            (self.path_glob is None or fnmatch.fnmatchcase(span.path, self.path_glob))
            and (self.operation is None or span.operation == self.operation)
            and (self.pid is None or span.attributes.get(ATTR_PID) == self.pid)
            and (self.error_type is None or span.attributes.get(ATTR_ERROR_TYPE) == self.error_type)
            and (self.min_ms is None or span.duration_ms >= self.min_ms)
            and (self.since_ns is None or span.start_ns >= self.since_ns)
            and (self.until_ns is None or span.start_ns <= self.until_ns)
        )


def search(spans: Iterable[SpanRecord], query: Query) -> Iterator[SpanRecord]:
    return (span for span in spans if query.matches(span))


def render_tree(spans: list[SpanRecord], trace_id: str) -> list[str]:
    """A trace as an indented tree, children in start order."""
    in_trace = [span for span in spans if span.trace_id == trace_id]
    children: dict[str, list[SpanRecord]] = defaultdict(list)
    ids = {span.span_id for span in in_trace}
    roots = []
    for span in in_trace:
        if span.parent_id and span.parent_id in ids:
            children[span.parent_id].append(span)
        else:
            roots.append(span)
    lines: list[str] = []

    def walk(span: SpanRecord, depth: int) -> None:
        lines.append("  " * depth + span.line())
        for child in children[span.span_id]:
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return lines


def session_traces(spans: Iterable[SpanRecord]) -> list[str]:
    """Trace ids of handle sessions (file and directory), in start order."""
    return [span.trace_id for span in spans if span.name in (SPAN_FILE_SESSION, SPAN_DIRECTORY_SESSION)]


def summary(spans: list[SpanRecord], top: int = 10) -> list[str]:
    """The slowest operations, bytes per path, and errors per errno."""
    operations = [span for span in spans if ATTR_OPERATION in span.attributes]
    lines = [f"{len(operations)} operations in {len({s.trace_id for s in spans})} traces", "", "slowest operations:"]
    lines += ["  " + span.line() for span in sorted(operations, key=lambda s: -s.duration_ms)[:top]]
    moved: Counter[str] = Counter()
    for span in operations:
        moved[span.path] += int(span.attributes.get(ATTR_TRANSFERRED, 0)) if span.operation in ("read", "write") else 0
    lines += ["", "bytes read and written per path:"]
    lines += [f"  {count:>14,}  {path}" for path, count in moved.most_common(top) if count]
    errors = Counter(str(s.attributes[ATTR_ERROR_TYPE]) for s in operations if ATTR_ERROR_TYPE in s.attributes)
    by_operation = Counter(
        (str(s.attributes[ATTR_ERROR_TYPE]), s.operation) for s in operations if ATTR_ERROR_TYPE in s.attributes
    )
    lines += ["", "errors per errno:"]
    for error_type, count in errors.most_common():
        detail = ", ".join(f"{op} {n}" for (kind, op), n in by_operation.most_common() if kind == error_type)
        lines.append(f"  {error_type:<12} {count:>8}  ({detail})")
    if not errors:
        lines.append("  none")
    return lines


def kept_listing(files: list[KeptSpanFile]) -> list[str]:
    """The kept span files as a table, oldest first: which mount, when it started, how big, and where."""
    rows = [("MOUNTPOINT", "STARTED", "BYTES", "PATH")]
    rows += [
        (file.mountpoint, file.started.astimezone().isoformat(timespec="seconds"), f"{file.size:,}", str(file.path))
        for file in files
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return [
        f"{mountpoint:<{widths[0]}}  {started:<{widths[1]}}  {size:>{widths[2]}}  {path}"
        for mountpoint, started, size, path in rows
    ]
