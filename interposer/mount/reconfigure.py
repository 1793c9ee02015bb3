"""What can change while a mount serves: fault rules, throttle limits, the crash journal, which layers run.

A change is validated as a whole configuration first (the same model as
the config file), then only the layers of the sections it names are rebuilt,
and the chain is swapped into the pipeline in one assignment: requests
already running finish on the old chain, the next one takes the new.  The
layers of the other sections are kept as they are, with their state: token
buckets, fault rule counters, the journal's undo records.  A bad change
raises ``ConfigError`` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import ValidationError

from ..backends.protocol import Backend
from ..config import ConfigError, InterposerConfig, describe_errors
from ..fuse.pipeline import Layer, Pipeline
from ..layers.crash.journal import CrashJournal
from ..layers.faults.layer import FaultLayer
from ..layers.metrics.layer import MetricsLayer
from ..layers.throttle.layer import ThrottleLayer
from ..layers.tracing.layer import TracingLayer
from .registry import REGISTRY, LayerKind, Materials, Outlets

RUNTIME_SECTIONS = ("faults", "throttle", "crash")
"""Config sections that can be replaced without remounting."""

L = TypeVar("L")


@runtime_checkable
class _Closing(Protocol):
    """A layer that holds something to let go of when dropped or unmounted (tracing's open parent spans, the
    journal's descriptors)."""

    def close(self) -> None: ...


class LayerStack:
    """The mount's layers by kind (``registry.REGISTRY``), each switchable, rebuilt atomically."""

    def __init__(self, pipeline: Pipeline, config: InterposerConfig, outlets: Outlets, backend: Backend) -> None:
        self.pipeline = pipeline
        self.config = config
        self._outlets = outlets
        self._backend = backend
        self._layers: dict[str, tuple[Layer, ...]] = {kind.name: () for kind in REGISTRY}
        self.enabled = {kind.name: True for kind in REGISTRY}
        self._build(config, REGISTRY)

    def _build(self, config: InterposerConfig, kinds: Iterable[LayerKind]) -> None:
        """Rebuild the layers of ``kinds`` only; the others keep their state.  A layer a kind no longer has is
        closed, if it holds anything (the journal's descriptors)."""
        made = Materials(config, self._outlets, self._backend)
        for kind in kinds:
            before = self._layers[kind.name]
            after = self._layers[kind.name] = kind.build(made, before)
            for layer in before:
                if layer not in after and isinstance(layer, _Closing):
                    layer.close()
            if kind.section is not None:
                self.enabled[kind.name] = getattr(config, kind.section).enabled
        self.config = config
        self._install()

    def _install(self) -> None:
        self.pipeline.replace(
            [layer for kind in REGISTRY if self.enabled[kind.name] for layer in self._layers[kind.name]]
        )

    def _one(self, name: str, cls: type[L]) -> L | None:
        """The layer of kind ``name``, as the class its builder makes; None when absent."""
        for layer in self._layers[name]:
            assert isinstance(layer, cls), f"the registry builds {name} as {cls.__name__}"
            return layer
        return None

    @property
    def tracing(self) -> TracingLayer | None:
        return self._one("tracing", TracingLayer)

    @property
    def metrics(self) -> MetricsLayer | None:
        return self._one("metrics", MetricsLayer)

    @property
    def throttle(self) -> ThrottleLayer | None:
        return self._one("throttle", ThrottleLayer)

    @property
    def faults(self) -> FaultLayer | None:
        return self._one("faults", FaultLayer)

    @property
    def journal(self) -> CrashJournal | None:
        return self._one("crash", CrashJournal)

    @property
    def extra(self) -> tuple[Layer, ...]:
        return self._layers["extra"]

    def replace_sections(self, sections: Mapping[str, Any]) -> InterposerConfig:
        """Replace whole runtime sections (faults, throttle, crash) with new, validated ones; keep the rest."""
        unknown = sorted(set(sections) - set(RUNTIME_SECTIONS))
        if unknown:
            raise ConfigError(
                f"{', '.join(unknown)}: cannot change while mounted; allowed: {', '.join(RUNTIME_SECTIONS)} "
                "(remount for the rest)"
            )
        raw = {**self.config.model_dump(mode="json"), **sections}
        try:
            config = InterposerConfig.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc)) from None
        self._build(config, [kind for kind in REGISTRY if kind.section in sections])
        return config

    def switch(self, name: str, on: bool) -> None:
        """Turn a layer on or off; its configuration is kept for when it comes back."""
        # A kind with a runtime section can be switched while absent: its section keeps the switch for when it is
        # configured.  One without (tracing, metrics) is in the mount from its start or never.
        available = [
            kind.name for kind in REGISTRY if kind.switchable and (kind.section is not None or self._layers[kind.name])
        ]
        if name not in available:
            raise ConfigError(f"layer {name!r} is not in this mount; allowed: {', '.join(available)}")
        self.enabled[name] = on
        if name in RUNTIME_SECTIONS:
            section = getattr(self.config, name).model_copy(update={"enabled": on})
            self.config = self.config.model_copy(update={name: section})
        self._install()

    def status(self) -> dict[str, Any]:
        """Each layer: on, off or absent (nothing configured); the fault and throttle counters."""
        return {
            "layers": {kind.name: self._state(kind.name) for kind in REGISTRY},
            "faults": None if self.faults is None else self.faults.counters(),
            "throttle": None if self.throttle is None else self.throttle.counters(),
            "unsynced": None if self.journal is None else self.journal.pending(),
        }

    def _state(self, name: str) -> str:
        if not self._layers[name]:
            return "absent"
        return "on" if self.enabled[name] else "off"

    async def crash(self) -> dict[str, int]:
        """Drop every write not fsynced, as a power loss would."""
        if self.journal is None:
            raise ConfigError("crash needs crash.enabled: true (set it in the config or with ctl set)")
        return await self.journal.drop()

    def close(self) -> None:
        """Close every layer that holds something (tracing ends its open parent spans, the journal its
        descriptors); before the telemetry stops, so what they hand over is exported."""
        for kind in REGISTRY:
            for layer in self._layers[kind.name]:
                if isinstance(layer, _Closing):
                    layer.close()
