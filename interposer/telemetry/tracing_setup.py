"""Building the span export pipeline from the config and the standard OTEL_* environment variables.

Explicit configuration wins; an unset field falls back to the OpenTelemetry
variable the SDK documents; the embedded default (no endpoint anywhere)
writes a local span file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from opentelemetry.sdk.resources import Resource

from ..config import TracingConfig
from ..names import SIGNAL_TRACES
from .shared import TelemetryHealth, env, signal_variable
from .shipper import SpanShipper

log = logging.getLogger(__name__)


@dataclass
class TracingSetup:
    """What the mount keeps of the tracing pipeline: where kept records go, at which ratio."""

    sink: SpanShipper | DiscardingSink
    ratio: float
    exporter_name: str

    @property
    def destination(self) -> str:
        return self.sink.destination

    def wait_ready(self) -> None:
        """Wait until the export process runs; its configuration errors are raised here, before mounting."""
        self.sink.wait_ready()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep records moving to the export process while the mount serves."""
        await self.sink.run(task_status)

    def shutdown(self) -> None:
        """Export what is held and stop the export process."""
        self.sink.close()


def sample_ratio(config: TracingConfig) -> float:
    """The configured ratio, else OTEL_TRACES_SAMPLER(_ARG), else 1."""
    if config.sample_ratio is not None:
        return config.sample_ratio
    sampler = (env("OTEL_TRACES_SAMPLER") or "parentbased_always_on").lower()
    if sampler.endswith("always_off"):
        return 0.0
    if sampler.endswith("traceidratio"):
        try:
            return min(max(float(env("OTEL_TRACES_SAMPLER_ARG") or "1"), 0.0), 1.0)
        except ValueError:
            log.warning("OTEL_TRACES_SAMPLER_ARG is not a number; sampling everything")
    return 1.0


def exporter_kind(config: TracingConfig) -> str:
    """'otlp', 'file' or 'none'."""
    if config.exporter is not None:
        return config.exporter
    chosen = (env("OTEL_TRACES_EXPORTER") or "").split(",")[0].strip().lower()
    if chosen in ("otlp", "none"):
        return chosen
    if config.endpoint or env(*signal_variable(SIGNAL_TRACES, "ENDPOINT")):
        return "otlp"
    return "file"


class DiscardingSink:
    """The sink of the 'none' exporter: the layer still samples and counts, nothing leaves."""

    destination = "nowhere"

    def add(self, record: tuple[Any, ...]) -> None:
        return None

    def wait_ready(self) -> None:
        return None

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    def close(self) -> None:
        return None


def build_tracing(
    config: TracingConfig, default_file: Path, resource: Resource, health: TelemetryHealth
) -> TracingSetup:
    """Start the export process (unless spans go nowhere); ``TracingSetup.wait_ready`` hears how it went."""
    kind = exporter_kind(config)
    if kind == "none":
        return TracingSetup(DiscardingSink(), sample_ratio(config), kind)
    shipper = SpanShipper(kind, config, default_file, resource, health)
    shipper.start()
    return TracingSetup(shipper, sample_ratio(config), kind)
