"""The metrics layer: times and counts every operation, exactly, for a cost the benchmarks can bear.

The OTel SDK costs about 6 µs per synchronous measurement here (its
attribute hashing and locking), and a FUSE request costs tens of
microseconds, so a request pays for exactly one: the duration histogram,
with a precomputed attribute set.  Everything else is a plain integer the
request bumps in place, read by the SDK through observable instruments when
it collects.  Those integers are exact (the layer runs in the one trio
thread) and cost nothing on the I/O path.

The histogram's count per ``fuse.operation.name`` is the operation count;
failed requests carry ``error.type``, the errno symbol the caller saw.  When
the tracing layer (outside this one) has sampled the request's span, the
measurement carries its context, so the histogram gets exemplars that link
to the trace.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.trace import NonRecordingSpan, set_span_in_context

from ..names import (
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
    DURATION_BUCKETS,
    EVENT_THROTTLE,
    EXPORT_FAILURES,
    FAULTS_INJECTED,
    HANDLE_DIRECTORY,
    HANDLE_FILE,
    HANDLES_OPEN,
    IO_BYTES,
    OPERATION_DURATION,
    OPERATIONS_ACTIVE,
    SPANS_DROPPED,
    THROTTLE_WAIT,
    OpName,
)
from ..op import Op
from ..pipeline import NextCall
from ..telemetry import TelemetryHealth

_OPENS = {OpName.OPEN: HANDLE_FILE, OpName.CREATE: HANDLE_FILE, OpName.OPENDIR: HANDLE_DIRECTORY}
_RELEASES = {OpName.RELEASE: HANDLE_FILE, OpName.RELEASEDIR: HANDLE_DIRECTORY}
_DIRECTORY_CHANGE = {OpName.MKDIR: 1, OpName.RMDIR: -1}


def errno_symbol(error: BaseException) -> str:
    """The errno symbol the caller sees for an exception: its own for OSError, EIO for a defect."""
    code = (error.errno if isinstance(error, OSError) else None) or errno.EIO
    return errno.errorcode.get(code, str(code))


class MetricsLayer:
    """Inside tracing, outside throttling and faults: its durations include waits and injected latency."""

    def __init__(self, meter: Meter, health: TelemetryHealth) -> None:
        self._health = health
        self._duration = meter.create_histogram(
            OPERATION_DURATION.name,
            unit=OPERATION_DURATION.unit,
            description=OPERATION_DURATION.description,
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._throttle_wait = meter.create_histogram(
            THROTTLE_WAIT.name,
            unit=THROTTLE_WAIT.unit,
            description=THROTTLE_WAIT.description,
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._succeeded = {name: {ATTR_OPERATION: name.value} for name in OpName}
        self._failed: dict[tuple[OpName, str], dict[str, str]] = {}
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
        attributes = self._succeeded[name]
        start = time.perf_counter()
        try:
            result = await call_next(op)
        except BaseException as error:
            attributes = self._failure_attributes(name, error)
            raise
        else:
            self._succeeded_with(op)
            return result
        finally:
            duration = time.perf_counter() - start
            active[name] -= 1
            if name in _RELEASES:
                self.handles[_RELEASES[name]] -= 1  # the kernel has let go of the handle either way
            span = op.span_context
            if span is None:
                self._duration.record(duration, attributes)
            else:
                self._duration.record(duration, attributes, set_span_in_context(NonRecordingSpan(span)))
            if op.fault is not None:
                key = (op.fault, name)
                self.faults[key] = self.faults.get(key, 0) + 1
            if op.events is not None:
                self._record_waits(op.events)

    def _succeeded_with(self, op: Op) -> None:
        name = op.name
        if name is OpName.READ:
            self.bytes[DIRECTION_READ] += op.transferred
        elif name is OpName.WRITE:
            self.bytes[DIRECTION_WRITE] += op.transferred
        elif name in _OPENS:
            self.handles[_OPENS[name]] += 1
        elif name in _DIRECTORY_CHANGE:
            self.directories_net_created += _DIRECTORY_CHANGE[name]

    def _failure_attributes(self, name: OpName, error: BaseException) -> dict[str, str]:
        key = (name, errno_symbol(error))
        attributes = self._failed.get(key)
        if attributes is None:
            attributes = self._failed[key] = {ATTR_OPERATION: name.value, ATTR_ERROR_TYPE: key[1]}
        return attributes

    def _record_waits(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        for event, attributes in events:
            if event == EVENT_THROTTLE:
                self._throttle_wait.record(
                    attributes[ATTR_THROTTLE_WAIT], {ATTR_THROTTLE_LIMIT: attributes[ATTR_THROTTLE_LIMIT]}
                )

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
        return [Observation(count, self._succeeded[name]) for name, count in self.active.copy().items()]

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
