"""The one assembler: every layer of a mount is built here, and runs in the order of ``REGISTRY``.

Outermost first, and why each sits where it does:

1. **tracing**: a span per request.  Outermost, so a span covers everything
   inside it (throttle waits, injected faults and latency) and allots the
   span ids the layers inside attach to what they report.
2. **metrics**: the request instruments.  Inside tracing, so a duration can
   carry the sampled span as an exemplar; outside everything else, for the
   same reason as tracing.
3. **throttle**: token buckets; a request waits for its token first,
4. **faults**: then a fault rule may fail, delay or corrupt it
   (docs/faults.md).
5. **extra**: the layers ``extra_layers`` names, in the order listed.
6. **crash**: the crash journal, innermost, next to the backend: an undo
   record must be exactly the write that reaches the backing file.  A layer
   inside it could change a write after it was recorded (a drop would then
   restore the wrong bytes) or fail it after, so extra layers run outside it.

``LayerStack`` (``reconfigure.py``) holds what this module builds and asks
it again when a runtime section changes; nothing else builds a layer.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from ..backends.protocol import Backend
from ..config import InterposerConfig
from ..fuse.pipeline import Layer
from ..layers.crash.journal import CrashJournal
from ..layers.faults.layer import FaultLayer
from ..layers.metrics.layer import MetricsLayer
from ..layers.throttle.layer import ThrottleLayer
from ..layers.tracing.layer import SpanSink, TracingLayer
from ..layers.tracing.propagation import CallerContexts
from ..telemetry.metrics_setup import MetricsSetup
from ..telemetry.shared import TelemetryHealth


@dataclass(frozen=True)
class Outlets:
    """Where the observing layers hand what they observe; an observing layer is built only when its outlet exists.

    They outlive any layer and are made before them by whoever assembles the mount: the mount from its export
    machinery (``telemetry``), the in-process tests from a list of records and an in-memory metric reader.
    """

    health: TelemetryHealth
    spans: SpanSink | None = None
    sample_ratio: float = 1.0
    contexts: CallerContexts | None = None
    """The trace contexts callers announce (the tracing layer answers the protocol) or inherit."""
    metrics: MetricsSetup | None = None


@dataclass(frozen=True)
class Materials:
    """What every layer is built from: the validated config, the outlets and the backend (through its protocol)."""

    config: InterposerConfig
    outlets: Outlets
    backend: Backend


Build = Callable[[Materials, tuple[Layer, ...]], tuple[Layer, ...]]
"""Build one kind's layers; the second argument is what the kind has now (a builder may keep it).  No layer (an
empty tuple): the kind is absent, nothing configured for it."""


@dataclass(frozen=True)
class LayerKind:
    """One entry of the registry."""

    name: str
    build: Build
    section: str | None = None
    """The runtime config section it is built from: changing that section rebuilds it, and the section's
    ``enabled`` says whether it runs."""
    switchable: bool = False
    """``ctl enable``/``ctl disable`` take it out of the chain and back, keeping its state."""


def _tracing(made: Materials, _now: tuple[Layer, ...]) -> tuple[Layer, ...]:
    outlets = made.outlets
    if outlets.spans is None:
        return ()
    return (TracingLayer(outlets.spans, made.config.tracing, outlets.sample_ratio, outlets.contexts),)


def _metrics(made: Materials, _now: tuple[Layer, ...]) -> tuple[Layer, ...]:
    metrics = made.outlets.metrics
    if metrics is None:
        return ()
    return (MetricsLayer(metrics.meter, metrics.duration, metrics.throttle_wait, made.outlets.health),)


def _throttle(made: Materials, _now: tuple[Layer, ...]) -> tuple[Layer, ...]:
    return (ThrottleLayer(made.config.throttle),) if made.config.throttle.limits() else ()


def _faults(made: Materials, _now: tuple[Layer, ...]) -> tuple[Layer, ...]:
    return (FaultLayer(made.config.faults),) if made.config.faults.rules else ()


def _extra(made: Materials, _now: tuple[Layer, ...]) -> tuple[Layer, ...]:
    """Each 'module:attribute' of ``extra_layers`` called (a class or a factory); the config checked they import."""
    layers = []
    for spec in made.config.extra_layers:
        module, _, attribute = spec.partition(":")
        layers.append(getattr(importlib.import_module(module), attribute)())
    return tuple(layers)


def _crash(made: Materials, now: tuple[Layer, ...]) -> tuple[Layer, ...]:
    """The journal lives as long as the section stays enabled: setting the section again keeps its undo records."""
    if not made.config.crash.enabled:
        return ()
    return now or (CrashJournal(made.backend),)


REGISTRY: tuple[LayerKind, ...] = (
    LayerKind("tracing", _tracing, switchable=True),
    LayerKind("metrics", _metrics, switchable=True),
    LayerKind("throttle", _throttle, section="throttle", switchable=True),
    LayerKind("faults", _faults, section="faults", switchable=True),
    LayerKind("extra", _extra),
    LayerKind("crash", _crash, section="crash"),
)
"""Every kind of layer, outermost first: the order they run in (the module's docstring says why)."""

SWITCHABLE_LAYERS = tuple(kind.name for kind in REGISTRY if kind.switchable)
"""What ``ctl enable`` and ``ctl disable`` take.  Not the journal: out of the chain it would miss writes that a
drop must undo (``ctl set`` with ``crash.enabled: false`` ends it).  Extra layers run whenever configured."""
