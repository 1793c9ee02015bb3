"""``python -m dashboards``: write every dashboard's JSON where the chart reads it."""

from __future__ import annotations

import sys
from pathlib import Path

from . import faults, latency, overview, pipeline
from .common import to_json

OUTPUT = Path(__file__).resolve().parent.parent / "charts" / "interposer" / "dashboards"
DASHBOARDS = {
    "io-overview.json": overview.build,
    "latency.json": latency.build,
    "faults-and-throttling.json": faults.build,
    "telemetry-pipeline.json": pipeline.build,
}


def render() -> dict[Path, str]:
    """Each dashboard file and its content."""
    return {OUTPUT / name: to_json(build()) for name, build in DASHBOARDS.items()}


if __name__ == "__main__":
    for path, text in render().items():
        path.write_text(text)
        sys.stdout.write(f"wrote {path}\n")
