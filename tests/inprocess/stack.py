"""An interposer assembled in the test's own process and driven through the adapter's handlers.

Nothing is mounted: each handler of ``InterposerFS`` is awaited directly, as
pyfuse3 would await it, so the request goes through the same adapter,
pipeline, layers and backend as on a mount.  Kept span records go to a list.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyfuse3
import trio
from opentelemetry.sdk.metrics import MeterProvider

from interposer.config import InterposerConfig
from interposer.fuse.adapter import InterposerFS
from interposer.fuse.pipeline import Pipeline
from interposer.fuse.request import Notes, Request
from interposer.layers.metrics.histogram import RequestHistogram
from interposer.layers.metrics.layer import MetricsLayer
from interposer.layers.tracing.propagation import CallerContexts
from interposer.layers.tracing.records import SpanData, span_data
from interposer.mount.reconfigure import LayerStack
from interposer.mount.registry import Outlets
from interposer.mount.serve import make_backend
from interposer.names import DURATION_BUCKETS, OPERATION_DURATION, THROTTLE_WAIT, OpName
from interposer.telemetry.metrics_setup import MetricsSetup
from interposer.telemetry.shared import TelemetryHealth

T = TypeVar("T")


@dataclass
class Caller:
    """What pyfuse3's RequestContext carries: the calling process and its ids."""

    pid: int = 4242
    uid: int = 0
    gid: int = 0
    umask: int = 0o022


CALLER: Any = Caller()


class RecordingSink:
    """Kept span records, in the order the tracing layer handed them over."""

    def __init__(self) -> None:
        self.records: list[tuple[Any, ...]] = []

    def add(self, record: tuple[Any, ...]) -> None:
        self.records.append(record)

    def spans(self) -> list[SpanData]:
        return [span_data(record) for record in self.records]


class InProcessStack:
    """Backend, layers and adapter of one mount, without the mount."""

    def __init__(
        self,
        backing: Path,
        config: dict[str, Any] | None = None,
        *,
        observe: bool = True,
        sample_ratio: float = 1.0,
    ) -> None:
        self.config = InterposerConfig.model_validate(config or {})
        self.backing = backing
        self.backend = make_backend(self.config, backing, 1024)
        self.sink = RecordingSink()
        self.health = TelemetryHealth()
        outlets = Outlets(self.health)
        if observe:
            provider = MeterProvider()
            self.duration = RequestHistogram(OPERATION_DURATION, DURATION_BUCKETS)
            throttle_wait = RequestHistogram(THROTTLE_WAIT, DURATION_BUCKETS)
            metrics = MetricsSetup(provider, provider.get_meter("test"), self.duration, throttle_wait)
            self.contexts = CallerContexts(self.config.tracing.context_cache_size)
            outlets = Outlets(
                self.health, spans=self.sink, sample_ratio=sample_ratio, contexts=self.contexts, metrics=metrics
            )
        self.pipeline = Pipeline(self.backend)
        self.layers = LayerStack(self.pipeline, self.config, outlets, self.backend)
        self.fs = InterposerFS(self.pipeline, self.backend)

    @property
    def metrics(self) -> MetricsLayer:
        """The metrics layer the registry built (the stack observes)."""
        layer = self.layers.metrics
        assert layer is not None, "the stack was made with observe=False"
        return layer

    def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await one handler call (a lambda returning the coroutine) in a fresh trio run."""

        async def main() -> T:
            return await call()

        return trio.run(main)

    def errno_of(self, call: Callable[[], Awaitable[Any]]) -> int:
        """The errno the adapter answers a call with (0: it succeeded)."""
        try:
            self.run(call)
        except pyfuse3.FUSEError as exc:
            return exc.errno
        return 0

    def create(self, name: bytes, parent: int = pyfuse3.ROOT_INODE) -> tuple[int, int]:
        """Create a regular file; its (handle, inode)."""
        info, attrs = self.run(lambda: self.fs.create(parent, name, 0o100644, os.O_RDWR, CALLER))
        return info.fh, attrs.st_ino

    def readdir(self, fh: int, offset: int = 0, room: int = 1 << 30) -> list[tuple[bytes, int]]:
        """(name, next offset) of the entries a readdir from ``offset`` replies with, ``room`` entries at most.

        pyfuse3's reply token needs a live session, so this builds the request
        the adapter would and runs it through the same pipeline.
        """
        entries: list[tuple[bytes, int]] = []

        def reply_entry(name: bytes, _attributes: pyfuse3.EntryAttributes, next_offset: int) -> bool:
            if len(entries) >= room:
                return False
            entries.append((name, next_offset))
            return True

        request = Request(OpName.READDIR)
        request.fh = fh
        request.offset = offset
        request.reply_entry = reply_entry
        self.run(lambda: self.pipeline.call(request.resolve(self.backend), Notes()))
        return entries

    def backend_path(self, name: bytes) -> str:
        """Where a file of the mount root lives in the backing directory."""
        return os.path.join(self.backing, os.fsdecode(name))

    def close(self) -> None:
        self.layers.close()
        self.backend.close()
