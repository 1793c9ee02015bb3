"""``python -m interposer.telemetry.export_process FD``: the mount's span export, in a process of its own.

The mount (``shipper.SpanShipper``) starts it with one end of a
``SOCK_SEQPACKET`` socket pair as FD and sends, in order:

1. its setup: exporter kind, tracing config, default span file, resource;
2. batches of span records (``records``), one message each;
3. end of file when it stops.

It answers with where spans go (or the error that stops it), then with its
cumulative counts of dropped spans and failed exports whenever they change.
So all the cost of a kept span except its record is paid outside the mount's
process.  The span file is written straight from the records; for OTLP the
spans are built as the SDK's and go through its batch processor, whose
exporters are the same as in any OTel program.  The queue in front of the
exporter is ours (``QueuedExport``), not the SDK's batch processor, whose
drops show only in its log: every span refused here is counted here.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import socket
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from pydantic import ValidationError

from .. import __version__
from ..config import ConfigError, TracingConfig
from ..layers.tracing.records import SpanData, span_data, to_span
from ..logs import configure_logging
from ..names import SCOPE_NAME, SIGNAL_TRACES
from .shared import CountingSpanExporter, TelemetryHealth, otlp_exporter
from .shipper import FINAL_EXPORT_TIMEOUT, MAX_MESSAGE
from .spanfile import SpanFile

log = logging.getLogger(__name__)

SCOPE = (SCOPE_NAME, __version__)
"""The instrumentation scope of every span."""
REPORT_INTERVAL = 0.5
"""Seconds between reports of changed counts, when no batch arrives to prompt one, while spans are on their way
out; with none, the process sleeps until the next batch (an idle mount's export costs no CPU)."""
MAX_BATCH = 512
"""Spans per export (per line of the span file)."""


class Export(Protocol):
    """Where the spans go: handed spans as they come, asked to catch up now and then, closed once."""

    def add(self, spans: list[SpanData]) -> None: ...

    def tick(self) -> None: ...

    def busy(self) -> bool:
        """Whether spans are still on their way out (so a tick or a count may be due)."""
        ...

    def close(self) -> None: ...


class FileExport:
    """Span file lines of ``MAX_BATCH`` spans (or ``max_queue_size``), written at least every ``export_delay``.

    Lines are written in this loop, before the next batch is read, so nothing
    queues here beyond one line: a slow disk backs up into the mount's socket,
    where the mount drops and counts.
    """

    def __init__(self, file: SpanFile, config: TracingConfig, health: TelemetryHealth) -> None:
        self._file = file
        self._delay = config.export_delay
        self._line = min(MAX_BATCH, config.max_queue_size)
        self._health = health
        self._pending: list[SpanData] = []
        self._since = 0.0

    def add(self, spans: list[SpanData]) -> None:
        if not self._pending:
            self._since = time.monotonic()
        self._pending.extend(spans)
        if len(self._pending) >= self._line:
            self._write()

    def tick(self) -> None:
        if self._pending and time.monotonic() - self._since >= self._delay:
            self._write()

    def busy(self) -> bool:
        return bool(self._pending)

    def close(self) -> None:
        self._write()

    def _write(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self._line):
            line = pending[start : start + self._line]
            if not self._file.write(line):
                self._health.failed_export(SIGNAL_TRACES, len(line))
                if self._health.due("export"):
                    log.warning("cannot write the span file %s (%s)", self._file.path, self._health.summary())


class QueuedExport:
    """SDK spans through a bounded queue to an SDK exporter, which an export thread calls with batches.

    Only the exporter's public interface is used.  ``add`` never waits: what
    does not fit in ``max_queue_size`` is dropped and counted at once.  The
    thread exports a batch when one is full or ``export_delay`` has passed, so
    a slow exporter fills the queue, never the receive loop.
    """

    def __init__(
        self, exporter: SpanExporter, resource: Resource, config: TracingConfig, health: TelemetryHealth
    ) -> None:
        self._exporter = exporter
        self._resource = resource
        self._scope = InstrumentationScope(*SCOPE)
        self._health = health
        self._capacity = config.max_queue_size
        self._batch = min(MAX_BATCH, config.max_queue_size)
        self._delay = config.export_delay
        self._queue: deque[ReadableSpan] = deque()
        self._ready = threading.Condition()
        self._closing = False
        self._exporting = False
        self._thread = threading.Thread(target=self._run, name="span-export", daemon=True)
        self._thread.start()

    def add(self, spans: list[SpanData]) -> None:
        with self._ready:
            room = self._capacity - len(self._queue)
        kept = spans[: max(room, 0)]
        if len(kept) < len(spans):
            self._health.dropped_spans += len(spans) - len(kept)
            if self._health.due("drop"):
                log.warning("the span export queue is full (%d spans) (%s)", self._capacity, self._health.summary())
        if not kept:
            return
        built = [to_span(span, self._resource, self._scope) for span in kept]
        with self._ready:
            was_empty = not self._queue
            self._queue.extend(built)
            if was_empty or len(self._queue) >= self._batch:
                self._ready.notify()  # the first span starts the batch's delay; a full batch goes at once

    def tick(self) -> None:
        return None  # the export thread keeps its own schedule

    def busy(self) -> bool:
        with self._ready:
            return bool(self._queue) or self._exporting

    def close(self) -> None:
        """Export everything queued, then shut the exporter down; stop a collector's retries after
        ``FINAL_EXPORT_TIMEOUT``.

        The mount's process waits for this one to exit; with a dead collector the SDK would retry each
        batch for its whole timeout, keeping a finished mount's process alive for most of a minute.
        """
        deadline = threading.Timer(FINAL_EXPORT_TIMEOUT, self._exporter.shutdown)
        deadline.start()
        try:
            with self._ready:
                self._closing = True
                self._ready.notify()
            self._thread.join()
        finally:
            deadline.cancel()
        self._exporter.shutdown()

    def _run(self) -> None:
        while True:
            with self._ready:
                self._exporting = False
                if not self._queue and not self._closing:
                    self._ready.wait()  # nothing to export: sleep until a span comes
                if len(self._queue) < self._batch and not self._closing:
                    self._ready.wait(self._delay)
                if not self._queue:
                    if self._closing:
                        return
                    continue
                batch = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
                self._exporting = True
            self._export(batch)

    def _export(self, batch: list[ReadableSpan]) -> None:
        try:
            self._exporter.export(batch)
        except Exception:  # an exporter's defect must not end span export; its batch is lost and counted
            log.exception("the span exporter failed")
            self._health.failed_export(SIGNAL_TRACES, len(batch))


def _build(setup: dict[str, Any], health: TelemetryHealth) -> tuple[Export, str, float]:
    """The export the mount asked for, where it sends, and how often it must be ticked."""
    config = TracingConfig.model_validate_json(setup["config"])
    if setup["kind"] == "file":
        path = config.file or Path(setup["default_file"])
        try:
            file = SpanFile(path, config.file_max_bytes, setup["resource"], SCOPE)
        except OSError as exc:
            raise ConfigError(f"tracing.file: cannot write spans to {path}: {exc.strerror or exc}") from exc
        return FileExport(file, config, health), str(path), min(config.export_delay, REPORT_INTERVAL)
    exporter, destination = otlp_exporter(SIGNAL_TRACES, config, "tracing")
    resource = Resource(setup["resource"], setup["schema_url"])
    export = QueuedExport(CountingSpanExporter(exporter, health), resource, config, health)
    return export, destination, REPORT_INTERVAL


def _report(channel: socket.socket, message: dict[str, Any]) -> None:
    """Tell the mount; a full socket loses the report, never stalls the export (counts are cumulative)."""
    with contextlib.suppress(OSError):
        channel.send(marshal.dumps(message), socket.MSG_DONTWAIT)


def serve(channel: socket.socket) -> int:
    """Export every batch the mount sends until it stops; the exit code says how setup went."""
    setup = marshal.loads(channel.recv(MAX_MESSAGE))
    configure_logging(setup["log_level"])
    health = TelemetryHealth()
    health.install()
    try:
        export, destination, tick = _build(setup, health)
    except (ConfigError, ValidationError, OSError) as exc:
        _report(channel, {"error": str(exc)})
        return 2
    _report(channel, {"destination": destination})
    buffer = bytearray(MAX_MESSAGE)
    view = memoryview(buffer)
    reported = (0, 0)
    channel.settimeout(tick)
    try:
        while True:
            try:
                size, _, flags, _ = channel.recvmsg_into([buffer])
            except TimeoutError:
                size, flags = -1, 0
            if size == 0:
                break  # the mount has stopped
            if flags & socket.MSG_TRUNC:
                log.error("a batch of span records larger than %d bytes was cut off and dropped", MAX_MESSAGE)
            elif size > 0:
                export.add([span_data(record) for record in marshal.loads(view[:size])])
            export.tick()
            idle = not export.busy()  # asked before the counts are read: an export still running may change them
            counts = (health.dropped_spans, health.export_failures[SIGNAL_TRACES])
            if counts != reported:
                _report(channel, {"dropped": counts[0], "failures": counts[1]})
                reported = counts
            channel.settimeout(None if idle else tick)
    finally:
        export.close()
    return 0


def main() -> None:
    # Spans wait when the CPU is short, I/O does not.  SCHED_IDLE, not just a high nice value: the
    # scheduler preempts an idle-policy task at once when the mount's thread wakes on that CPU, where a
    # nice-19 task may finish its slice first, delaying the request (measured: docs/performance.md).
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    with socket.socket(fileno=int(sys.argv[1])) as channel:
        sys.exit(serve(channel))


if __name__ == "__main__":
    main()
