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
from ...fuse.request import Op
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
    OpName,
)
from ...telemetry import TelemetryHealth
from .histogram import RequestHistogram, Series

_OPENS = {OpName.OPEN: HANDLE_FILE, OpName.CREATE: HANDLE_FILE, OpName.OPENDIR: HANDLE_DIRECTORY}
_RELEASES = {OpName.RELEASE: HANDLE_FILE, OpName.RELEASEDIR: HANDLE_DIRECTORY}
_DIRECTORY_CHANGE = {OpName.MKDIR: 1, OpName.RMDIR: -1}
_ACCOUNTED = frozenset({OpName.READ, OpName.WRITE, *_OPENS, *_RELEASES, *_DIRECTORY_CHANGE})


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

    async def __call__(self, op: Op, call_next: NextCall) -> Any:
        name = op.name
        active = self.active
        active[name] += 1
        start = perf_counter()
        try:
            result = await call_next(op)
        except BaseException as error:
            active[name] -= 1
            self._failure_series(name, error).add(perf_counter() - start, op.span_ids)
            self._account(op, failed=True)
            raise
        active[name] -= 1
        self._succeeded[name].add(perf_counter() - start, op.span_ids)
        if name in _ACCOUNTED or op.fault is not None or op.events is not None:
            self._account(op, failed=False)
        return result

    def _account(self, op: Op, *, failed: bool) -> None:
        """What some operations change besides their duration, and what inner layers reported."""
        name = op.name
        if name in _RELEASES:
            self.handles[_RELEASES[name]] -= 1  # the kernel has let go of the handle either way
        elif not failed:
            if name is OpName.READ:
                self.bytes[DIRECTION_READ] += op.transferred
            elif name is OpName.WRITE:
                self.bytes[DIRECTION_WRITE] += op.transferred
            elif name in _OPENS:
                self.handles[_OPENS[name]] += 1
            elif name in _DIRECTORY_CHANGE:
                self.directories_net_created += _DIRECTORY_CHANGE[name]
        if op.fault is not None:
            key = (op.fault, name)
            self.faults[key] = self.faults.get(key, 0) + 1
        if op.events is not None:
            self._record_waits(op.events)

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
