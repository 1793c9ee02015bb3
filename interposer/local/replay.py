"""Replaying a span file into a collector over OTLP/HTTP (protobuf)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from ..telemetry.spanfile import from_otlp_json
from .spanlines import read_requests


def replay_file(path: Path, endpoint: str, timeout: float = 10.0) -> int:
    """POST every request of the file (its rotation first) to ``endpoint`` (``/v1/traces`` added if missing)."""
    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    count = 0
    for line in read_requests(path):
        body = from_otlp_json(line.text).SerializeToString()
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/x-protobuf"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
        count += 1
    return count
