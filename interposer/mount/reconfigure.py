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

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ..backends.protocol import Backend
from ..config import ConfigError, InterposerConfig, describe_errors
from ..fuse.pipeline import Layer, Pipeline
from ..layers.crash.journal import CrashJournal
from ..layers.faults.layer import FaultLayer
from ..layers.throttle.layer import ThrottleLayer

RUNTIME_SECTIONS = ("faults", "throttle", "crash")
"""Config sections that can be replaced without remounting."""
LAYER_ORDER = ("tracing", "metrics", "throttle", "faults")
"""Outermost first: observation sees throttle waits and injected faults."""


class LayerStack:
    """The mount's layers by name, each switchable, rebuilt atomically."""

    def __init__(
        self,
        pipeline: Pipeline,
        config: InterposerConfig,
        observers: Mapping[str, Layer],
        extra: list[Layer],
        backend: Backend,
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self._backend = backend
        self.journal: CrashJournal | None = None
        self._observers = dict(observers)
        self._extra = extra
        self.enabled = dict.fromkeys(observers, True)
        self.throttle: ThrottleLayer | None = None
        self.faults: FaultLayer | None = None
        self._build(config, RUNTIME_SECTIONS)

    def _build(self, config: InterposerConfig, sections: tuple[str, ...] | list[str]) -> None:
        """Rebuild the layers of the named sections only; the others keep their state."""
        if "throttle" in sections:
            throttle = config.throttle
            self.throttle = ThrottleLayer(throttle) if throttle.limits() else None
            self.enabled["throttle"] = throttle.enabled
        if "faults" in sections:
            self.faults = FaultLayer(config.faults) if config.faults.rules else None
            self.enabled["faults"] = config.faults.enabled
        if "crash" in sections:
            if config.crash.enabled and self.journal is None:
                self.journal = CrashJournal(self._backend)
            elif not config.crash.enabled and self.journal is not None:
                self.journal.close()
                self.journal = None
        self.config = config
        self._install()

    def _layer(self, name: str) -> Layer | None:
        if name == "throttle":
            return self.throttle
        if name == "faults":
            return self.faults
        return self._observers.get(name)

    def _install(self) -> None:
        layers = [layer for name in LAYER_ORDER if self.enabled.get(name) and (layer := self._layer(name)) is not None]
        journal = [] if self.journal is None else [self.journal]
        self.pipeline.replace([*layers, *journal, *self._extra])

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
        self._build(config, sorted(sections))
        return config

    def switch(self, name: str, on: bool) -> None:
        """Turn a layer on or off; its configuration is kept for when it comes back."""
        available = [layer for layer in LAYER_ORDER if layer in self.enabled]
        if name not in available:
            raise ConfigError(f"layer {name!r} is not in this mount; allowed: {', '.join(available)}")
        self.enabled[name] = on
        if name in RUNTIME_SECTIONS:
            section = getattr(self.config, name).model_copy(update={"enabled": on})
            self.config = self.config.model_copy(update={name: section})
        self._install()

    def status(self) -> dict[str, Any]:
        """Each layer: on, off or absent (nothing configured); the fault and throttle counters."""
        layers = {}
        for name in LAYER_ORDER:
            present = name in self.enabled and self._layer(name) is not None
            layers[name] = "absent" if not present else ("on" if self.enabled[name] else "off")
        return {
            "layers": layers,
            "faults": None if self.faults is None else self.faults.counters(),
            "throttle": None if self.throttle is None else self.throttle.counters(),
            "unsynced": None if self.journal is None else self.journal.pending(),
        }

    async def crash(self) -> dict[str, int]:
        """Drop every write not fsynced, as a power loss would."""
        if self.journal is None:
            raise ConfigError("crash needs crash.enabled: true (set it in the config or with ctl set)")
        return await self.journal.drop()

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
