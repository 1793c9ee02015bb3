"""The metrics layer: times and counts every operation, exactly, for a cost the benchmarks can bear.

A bare FUSE request costs about 20 µs here and the SDK's synchronous
instruments about 6 µs per measurement, so the request path calls none of
them.  Durations go into request histograms whose series the layer holds
per operation and errno (``histogram.py``); everything else is a plain
integer bumped in place and read by the SDK through observable instruments
when it collects.  Both are exact: the layer runs in the one trio thread.

The duration histogram's count per ``fuse.operation.name`` is the operation
count; failed requests carry ``error.type``, the errno symbol the caller
saw.  When the tracing layer (outside this one) has sampled the request's
span, the measurement carries it, so the histogram gets exemplars that
link to the trace.
"""

from __future__ import annotations

from collections.abc import Iterable
from time import perf_counter
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from ...errnos import errno_of, errno_symbol
from ...fuse.pipeline import NextCall
from ...fuse.request import Notes, Reply, Request
from ...names import (
    ATTR_ERROR_TYPE,
    ATTR_FAULT,
    ATTR_HANDLE_KIND,
    ATTR_IO_DIRECTION,
    ATTR_OPERATION,
    ATTR_TELEMETRY_SIGNAL,
    ATTR_THROTTLE_LIMIT,
    ATTR_THROTTLE_WAIT,
    DIRECTION_READ,
    DIRECTION_WRITE,
    DIRECTORIES_NET_CREATED,
    EVENT_THROTTLE,
    EXPORT_FAILURES,
    FAULTS_INJECTED,
    HANDLE_DIRECTORY,
    HANDLE_FILE,
    HANDLES_OPEN,
    IO_BYTES,
    OPERATIONS_ACTIVE,
    SPANS_DROPPED,
    TRAITS,
    OpName,
)
from ...telemetry.shared import TelemetryHealth
from .histogram import RequestHistogram, Series

_DIRECTORY_CHANGE = {OpName.MKDIR: 1, OpName.RMDIR: -1}
_ACCOUNTED = frozenset(
    name
    for name, traits in TRAITS.items()
    if traits.direction or traits.opens or traits.releases or name in _DIRECTORY_CHANGE
)
"""Operations that change a counter besides their duration."""


class MetricsLayer:
    """Inside tracing, outside throttling and faults: its durations include waits and injected latency."""

    def __init__(
        self, meter: Meter, duration: RequestHistogram, throttle_wait: RequestHistogram, health: TelemetryHealth
    ) -> None:
        self._health = health
        self._duration = duration
        self._throttle_wait = throttle_wait
        self._succeeded = {name: duration.series_for({ATTR_OPERATION: name.value}) for name in OpName}
        self._failed: dict[tuple[OpName, str], Series] = {}
        self._waits: dict[str, Series] = {}
        self.active = dict.fromkeys(OpName, 0)
        self.bytes = {DIRECTION_READ: 0, DIRECTION_WRITE: 0}
        self.handles = {HANDLE_FILE: 0, HANDLE_DIRECTORY: 0}
        self.directories_net_created = 0
        self.faults: dict[tuple[str, OpName], int] = {}
        for instrument, callback in (
            (IO_BYTES, self._observe_bytes),
            (FAULTS_INJECTED, self._observe_faults),
            (SPANS_DROPPED, self._observe_dropped_spans),
            (EXPORT_FAILURES, self._observe_export_failures),
        ):
            meter.create_observable_counter(
                instrument.name, [callback], unit=instrument.unit, description=instrument.description
            )
        for instrument, callback in (
            (OPERATIONS_ACTIVE, self._observe_active),
            (HANDLES_OPEN, self._observe_handles),
            (DIRECTORIES_NET_CREATED, self._observe_directories),
        ):
            meter.create_observable_up_down_counter(
                instrument.name, [callback], unit=instrument.unit, description=instrument.description
            )

    async def __call__(self, op: Request, notes: Notes, call_next: NextCall) -> Reply:
        name = op.name
        active = self.active
        active[name] += 1
        start = perf_counter()
        try:
            reply = await call_next(op, notes)
        except BaseException as error:
            active[name] -= 1
            self._failure_series(name, error).add(perf_counter() - start, notes.span_ids)
            self._account(op, notes, None)
            raise
        active[name] -= 1
        self._succeeded[name].add(perf_counter() - start, notes.span_ids)
        if name in _ACCOUNTED or notes.fault is not None or notes.events is not None:
            self._account(op, notes, reply)
        return reply

    def _account(self, op: Request, notes: Notes, reply: Reply | None) -> None:
        """What some operations change besides their duration (``reply`` None: it failed), and what layers noted."""
        traits = op.traits
        if traits.releases is not None:
            self.handles[traits.releases] -= 1  # the kernel has let go of the handle either way
        elif reply is not None:
            if traits.direction is not None:
                self.bytes[traits.direction] += reply.transferred
            elif traits.opens is not None:
                self.handles[traits.opens] += 1
            elif op.name in _DIRECTORY_CHANGE:
                self.directories_net_created += _DIRECTORY_CHANGE[op.name]
        if notes.fault is not None:
            key = (notes.fault, op.name)
            self.faults[key] = self.faults.get(key, 0) + 1
        if notes.events is not None:
            self._record_waits(notes.events)

    def _failure_series(self, name: OpName, error: BaseException) -> Series:
        key = (name, errno_symbol(errno_of(error)))
        series = self._failed.get(key)
        if series is None:
            series = self._failed[key] = self._duration.series_for(
                {ATTR_OPERATION: name.value, ATTR_ERROR_TYPE: key[1]}
            )
        return series

    def _record_waits(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        for event, attributes in events:
            if event == EVENT_THROTTLE:
                limit = attributes[ATTR_THROTTLE_LIMIT]
                series = self._waits.get(limit)
                if series is None:
                    series = self._waits[limit] = self._throttle_wait.series_for({ATTR_THROTTLE_LIMIT: limit})
                series.add(attributes[ATTR_THROTTLE_WAIT])

    # -- observable instruments: read by the SDK's collecting thread ---------------------------
    # Each callback copies the dict it reads in one step (atomic under the GIL), so it never
    # iterates a dict the request thread is changing.

    def _observe_bytes(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, {ATTR_IO_DIRECTION: key}) for key, value in self.bytes.copy().items()]

    def _observe_faults(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {ATTR_FAULT: fault, ATTR_OPERATION: name.value})
            for (fault, name), count in self.faults.copy().items()
        ]

    def _observe_active(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(count, {ATTR_OPERATION: name.value}) for name, count in self.active.copy().items()]

    def _observe_handles(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(count, {ATTR_HANDLE_KIND: kind}) for kind, count in self.handles.copy().items()]

    def _observe_directories(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.directories_net_created)]

    def _observe_dropped_spans(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._health.dropped_spans)]

    def _observe_export_failures(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {ATTR_TELEMETRY_SIGNAL: signal})
            for signal, count in self._health.export_failures.copy().items()
        ]
