"""Replaying a span file into a collector over OTLP/HTTP (protobuf)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from ..layers.tracing.spanfile import from_otlp_json


def replay_file(path: Path, endpoint: str, timeout: float = 10.0) -> int:
    """POST every request in the file to ``endpoint`` (``/v1/traces`` is added if missing)."""
    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    count = 0
    with path.open() as handle:
        for line in handle:
            if not line.strip():
                continue
            body = from_otlp_json(line).SerializeToString()
            request = urllib.request.Request(
                url, data=body, method="POST", headers={"Content-Type": "application/x-protobuf"}
            )
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
            count += 1
    return count
