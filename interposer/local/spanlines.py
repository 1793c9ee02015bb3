"""Reading a span file as a live or killed mount leaves it: the rotation first, then the file.

The export process appends whole lines, but a reader can catch a line half
written, and a mount killed mid-write leaves one for good; so a last line
without its newline is skipped, not an error.  Anything else that is not an
OTLP/JSON ``ExportTraceServiceRequest`` line means the file is not a span
file, and the error says so in one line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..telemetry.spanfile import rotated


class SpanFileError(ValueError):
    """The file is missing or is not a span file; the message names it and the line."""


@dataclass(frozen=True)
class RequestLine:
    """One complete line of a span file: its text (for replay) and what it decodes to."""

    text: str
    request: dict[str, Any]


def span_files(path: Path) -> list[Path]:
    """The files holding ``path``'s spans, oldest first: its rotation ``<file>.1``, then the file."""
    existing = [candidate for candidate in (rotated(path), path) if candidate.is_file()]
    if not existing:
        raise SpanFileError(f"{path}: no such span file (nor its rotation {rotated(path).name})")
    return existing


def read_requests(path: Path) -> Iterator[RequestLine]:
    """Every complete request line of the span file and its rotation, oldest first."""
    for file in span_files(path):
        with file.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                if not raw.endswith(b"\n"):
                    break  # being written now, or cut off when its mount was killed
                if raw.strip():
                    yield _decode(raw, f"{file}:{number}")


def _decode(raw: bytes, where: str) -> RequestLine:
    try:
        text = raw.decode()
        request = json.loads(text)
    except ValueError:
        request = None
    if not isinstance(request, dict) or not isinstance(request.get("resourceSpans"), list):
        raise SpanFileError(
            f"{where}: not a span file (each line must be an OTLP/JSON trace export request, as tracing.file writes)"
        )
    return RequestLine(text, request)
