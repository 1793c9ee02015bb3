"""``python -m interposer.tracing.export_process FD``: the mount's span export, in a process of its own.

The mount (``shipper.SpanShipper``) starts it with one end of a
``SOCK_SEQPACKET`` socket pair as FD and sends, in order:

1. its setup: exporter kind, tracing config, default span file, resource;
2. batches of span records (``records``), one message each;
3. end of file when it stops.

It answers with where spans go (or the error that stops it), then with its
cumulative counts of dropped spans and failed exports whenever they change.
The spans are built here and handed to the SDK's batch processor, whose
bounded queue and exporter are the same as in any OTel program; so all the
cost of a kept span except its record is paid outside the mount's process.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import socket
import sys
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from pydantic import ValidationError

from .. import __version__
from ..config import ConfigError, TracingConfig
from ..logs import configure_logging
from ..names import SIGNAL_TRACES
from ..telemetry import CountingSpanExporter, TelemetryHealth
from .records import to_span
from .setup import build_exporter
from .shipper import MAX_MESSAGE

log = logging.getLogger(__name__)

REPORT_INTERVAL = 0.5
"""Seconds between reports of changed counts, when no batch arrives to prompt one."""
NICENESS = 19
"""Spans wait when the CPU is short, I/O does not."""


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
        config = TracingConfig.model_validate_json(setup["config"])
        exporter, destination = build_exporter(setup["kind"], config, Path(setup["default_file"]))
    except (ConfigError, ValidationError, OSError) as exc:
        _report(channel, {"error": str(exc)})
        return 2
    processor: SpanProcessor = BatchSpanProcessor(
        CountingSpanExporter(exporter, health),
        max_queue_size=config.max_queue_size,
        schedule_delay_millis=config.export_delay * 1000,
        max_export_batch_size=min(512, config.max_queue_size),
    )
    _report(channel, {"destination": destination})
    resource = Resource(setup["resource"], setup["schema_url"])
    scope = InstrumentationScope("interposer", __version__)
    buffer = bytearray(MAX_MESSAGE)
    view = memoryview(buffer)
    reported = (0, 0)
    channel.settimeout(REPORT_INTERVAL)
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
                for record in marshal.loads(view[:size]):
                    processor.on_end(to_span(record, resource, scope))
            counts = (health.dropped_spans, health.export_failures[SIGNAL_TRACES])
            if counts != reported:
                _report(channel, {"dropped": counts[0], "failures": counts[1]})
                reported = counts
    finally:
        processor.shutdown()
    return 0


def main() -> None:
    os.nice(NICENESS)
    with socket.socket(fileno=int(sys.argv[1])) as channel:
        sys.exit(serve(channel))


if __name__ == "__main__":
    main()
