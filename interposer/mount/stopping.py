"""What ``interposer unmount`` can say after it: where the mount's spans are, once its server has written the last.

The kernel lets go of a mount before its server has exported what it holds,
so the span file is complete only when that process ends.  The unmount asks
the mount where its spans go while it still answers, and afterwards waits,
with a deadline, for its server to end before pointing at the file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..procfs import running_start_time
from ..telemetry.shipper import FINAL_EXPORT_TIMEOUT
from .control import NoAnswerError, NotAMountError, ask, socket_path_for

EXIT_WAIT = FINAL_EXPORT_TIMEOUT + 5
"""Seconds the unmount waits for the server to end: its last metrics push may take ``FINAL_EXPORT_TIMEOUT``."""


@dataclass(frozen=True)
class SpanWriter:
    """A mount's server, named by pid and start time (a pid is reused), and the span file it writes."""

    pid: int
    start_time: int
    span_file: Path


def span_writer(mountpoint: Path) -> SpanWriter | None:
    """The server of the interposer mount at ``mountpoint`` if it writes a span file; None if not, or if it is
    no interposer mount that answers (stale, another user's)."""
    try:
        reply = ask(mountpoint, socket_path_for(mountpoint), {"command": "status"})
    except (NotAMountError, NoAnswerError):
        return None
    tracing = reply.get("tracing")
    if not reply.get("ok") or not isinstance(tracing, dict) or tracing.get("exporter") != "file":
        return None
    start_time = running_start_time(reply["pid"])
    return None if start_time is None else SpanWriter(reply["pid"], start_time, Path(tracing["destination"]))


def wait_for_exit(writer: SpanWriter, timeout: float = EXIT_WAIT) -> bool:
    """Poll until the server has ended (or is a zombie); False at the deadline."""
    deadline = time.monotonic() + timeout
    while running_start_time(writer.pid) == writer.start_time:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
