"""``python -m interposer.layers.tracing.export_process FD``: the mount's span export, in a process of its own.

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
bounded queue and exporters are the same as in any OTel program.
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
from pathlib import Path
from typing import Any, Protocol

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from pydantic import ValidationError

from ... import __version__
from ...config import ConfigError, TracingConfig
from ...logs import configure_logging
from ...names import SCOPE_NAME, SIGNAL_TRACES
from ...telemetry import CountingSpanExporter, TelemetryHealth, otlp_exporter
from .records import SpanData, span_data, to_span
from .shipper import FINAL_EXPORT_TIMEOUT, MAX_MESSAGE
from .spanfile import SpanFile

log = logging.getLogger(__name__)

SCOPE = (SCOPE_NAME, __version__)
"""The instrumentation scope of every span."""
REPORT_INTERVAL = 0.5
"""Seconds between reports of changed counts, when no batch arrives to prompt one."""
MAX_BATCH = 512
"""Spans per export (per line of the span file)."""


class Export(Protocol):
    """Where the spans go: handed spans as they come, asked to catch up now and then, closed once."""

    def add(self, spans: list[SpanData]) -> None: ...

    def tick(self) -> None: ...

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

    def close(self) -> None:
        self._write()

    def _write(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self._line):
            if not self._file.write(pending[start : start + self._line]):
                self._health.export_failures[SIGNAL_TRACES] += 1
                if self._health.due("export"):
                    log.warning("cannot write the span file %s (%s)", self._file.path, self._health.summary())


class SdkExport:
    """The SDK's spans through its batch processor (bounded queue, export thread) to an SDK exporter."""

    def __init__(self, processor: SpanProcessor, exporter: SpanExporter, resource: Resource) -> None:
        self._processor = processor
        self._exporter = exporter
        self._resource = resource
        self._scope = InstrumentationScope(*SCOPE)

    def add(self, spans: list[SpanData]) -> None:
        for span in spans:
            self._processor.on_end(to_span(span, self._resource, self._scope))

    def tick(self) -> None:
        return None  # the processor's own thread exports on its schedule

    def close(self) -> None:
        """Export what is queued, but stop a collector's retries after ``FINAL_EXPORT_TIMEOUT``.

        The mount's process waits for this one to exit; with a dead collector the SDK would retry each
        batch for its whole timeout, keeping a finished mount's process alive for most of a minute.
        """
        deadline = threading.Timer(FINAL_EXPORT_TIMEOUT, self._exporter.shutdown)
        deadline.start()
        try:
            self._processor.shutdown()
        finally:
            deadline.cancel()


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
    counting = CountingSpanExporter(exporter, health)
    processor = BatchSpanProcessor(
        counting,
        max_queue_size=config.max_queue_size,
        schedule_delay_millis=config.export_delay * 1000,
        max_export_batch_size=min(MAX_BATCH, config.max_queue_size),
    )
    resource = Resource(setup["resource"], setup["schema_url"])
    return SdkExport(processor, counting, resource), destination, REPORT_INTERVAL


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
            counts = (health.dropped_spans, health.export_failures[SIGNAL_TRACES])
            if counts != reported:
                _report(channel, {"dropped": counts[0], "failures": counts[1]})
                reported = counts
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
