"""The mount's side of span export: records go, in batches, to an export process that never blocks I/O.

Why a process: an export thread in the mount's process, however cheap its
exporter, holds the GIL while the request thread comes back from its
syscalls, and at 100% sampling that alone cost a third of the throughput
(docs/performance.md).  The export process (``export_process``) builds the
SDK spans and runs the exporter; this side only batches records and sends
each batch as one message on a ``SOCK_SEQPACKET`` socket pair.

Never blocking: sends are non-blocking.  When the socket is full (the export
process is behind) or the process is gone, the batch is dropped, counted in
``TelemetryHealth.dropped_spans`` and logged at most once per interval.  Memory
is bounded by one batch here, the socket's buffer, and the export process's
own bounded queue.  A dead export process is restarted after a pause.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import marshal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio
from opentelemetry.sdk.resources import Resource

from ..config import ConfigError, TracingConfig
from ..names import SIGNAL_TRACES
from .shared import TelemetryHealth

log = logging.getLogger(__name__)

BATCH_RECORDS = 256
"""Records per message: large enough to amortise the send, small enough to stay far below any socket buffer."""
MAX_MESSAGE = 1 << 20
"""Largest message either side handles; a bigger batch is split, a single bigger record dropped."""
SOCKET_BUFFER = 4 << 20
"""Asked for as the send buffer (the kernel caps it at net.core.wmem_max): the slack before drops begin."""
FLUSH_INTERVAL = 0.1
"""Seconds a record waits at most before its batch is sent, when traffic is too thin to fill one."""
RESTART_PAUSE = 5.0
"""Seconds between restarts of an export process that keeps dying."""
READY_TIMEOUT = 60.0
"""Seconds the mount waits for a new export process to say where spans go, or why it cannot."""
FINAL_EXPORT_TIMEOUT = 5.0
"""Seconds a stopping mount's telemetry has to reach a collector; what it has not taken by then is dropped."""
EXIT_TIMEOUT = 30.0
"""Seconds the mount waits, when it stops, for the export process to export what it holds (a backstop: the
process gives up on its collector after ``FINAL_EXPORT_TIMEOUT``)."""


class SpanShipper:
    """Batches span records and sends them to an export process it starts, watches and stops."""

    def __init__(
        self, kind: str, config: TracingConfig, default_file: Path, resource: Resource, health: TelemetryHealth
    ) -> None:
        self._setup = marshal.dumps(
            {
                "kind": kind,
                "config": config.model_dump_json(),
                "default_file": str(default_file),
                "resource": dict(resource.attributes),
                "schema_url": resource.schema_url,
                "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
            }
        )
        self._health = health
        self._pending: list[tuple[Any, ...]] = []
        self._channel: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self.destination = "(export process starting)"
        self._dropped_here = 0
        self._reported_dropped = self._reported_failures = 0
        self._earlier_dropped = self._earlier_failures = 0
        """Counts reported by export processes that have since exited."""
        self._record_arrived: trio.Event | None = None
        """Set by the first record while ``run`` sleeps with nothing pending (None while it does not)."""

    # -- the export process --------------------------------------------------------------

    def start(self) -> None:
        """Start the export process and hand it its setup; ``wait_ready`` collects its answer."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            self._process = subprocess.Popen(
                [sys.executable, "-m", "interposer.telemetry.export_process", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                cwd="/",
                start_new_session=True,  # a Ctrl-C meant for the mount must not kill it before it has drained
            )
            ours.sendall(self._setup)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._channel = ours
        self._started = time.monotonic()
        self._reported_dropped = self._reported_failures = 0

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait for the export process's first word: where spans go, or the (configuration) error it hit."""
        assert self._channel is not None
        assert self._process is not None
        self._channel.settimeout(timeout)
        try:
            message = self._channel.recv(MAX_MESSAGE)
        except TimeoutError:
            self.close()
            raise RuntimeError(f"the span export process did not start within {timeout:g} s") from None
        finally:
            if self._channel is not None:
                self._channel.setblocking(False)
        if not message:
            code = self._process.wait()
            self.close()
            raise RuntimeError(f"the span export process exited with code {code} before starting (see its log)")
        answer = marshal.loads(message)
        if "error" in answer:
            self.close()
            raise ConfigError(answer["error"])
        self.destination = answer["destination"]

    def _restart_if_exited(self) -> None:
        process = self._process
        if process is None or process.poll() is None:
            return
        if self._channel is not None:
            self._take_reports()
            self._channel.close()
            self._channel = None
            self._earlier_dropped += self._reported_dropped
            self._earlier_failures += self._reported_failures
            log.error(
                "the span export process exited with code %s; spans are dropped until it restarts", process.returncode
            )
        if time.monotonic() - self._started >= RESTART_PAUSE:
            log.info("restarting the span export process")
            self.start()

    # -- records ----------------------------------------------------------------------------

    def add(self, record: tuple[Any, ...]) -> None:
        """Queue a record; every ``BATCH_RECORDS`` the batch is sent (or dropped), never waited for."""
        pending = self._pending
        pending.append(record)
        if len(pending) >= BATCH_RECORDS:
            self.flush()
        elif self._record_arrived is not None:
            self._record_arrived.set()

    def flush(self) -> None:
        """Send what is pending, without waiting."""
        if self._pending:
            batch, self._pending = self._pending, []
            self._send(batch)

    def _send(self, batch: list[tuple[Any, ...]]) -> None:
        message = marshal.dumps(batch)
        if len(message) > MAX_MESSAGE:
            if len(batch) == 1:
                self._drop(1, "a span record is larger than the largest message")
                return
            middle = len(batch) // 2
            self._send(batch[:middle])
            self._send(batch[middle:])
            return
        if self._channel is None:
            self._drop(len(batch), "the span export process is not running")
            return
        try:
            self._channel.send(message)
        except (BlockingIOError, TimeoutError):
            self._drop(len(batch), "the span export process is behind")
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED):
                raise
            self._drop(len(batch), "the span export process is gone")

    def _drop(self, count: int, why: str) -> None:
        self._dropped_here += count
        self._update_health()
        if self._health.due("shipping"):
            log.warning("%s: %d spans dropped (%s)", why, count, self._health.summary())

    # -- reports from the export process ------------------------------------------------------

    def _take_reports(self) -> None:
        """Read the export process's cumulative counts, without waiting."""
        assert self._channel is not None
        while True:
            try:
                message = self._channel.recv(MAX_MESSAGE)
            except (BlockingIOError, ConnectionError):
                break
            if not message:
                break
            report = marshal.loads(message)
            if "error" in report:
                log.error("the span export process cannot start: %s", report["error"])
            self.destination = report.get("destination", self.destination)
            self._reported_dropped = report.get("dropped", self._reported_dropped)
            self._reported_failures = report.get("failures", self._reported_failures)
        self._update_health()

    def _update_health(self) -> None:
        health = self._health
        health.dropped_spans = self._dropped_here + self._earlier_dropped + self._reported_dropped
        health.export_failures[SIGNAL_TRACES] = self._earlier_failures + self._reported_failures

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send thin traffic's batches, collect the export process's counts, restart it if it died.

        It wakes for work only: a batch that has waited ``FLUSH_INTERVAL``, a report or the end of the export
        process (its socket becomes readable), or a dead process's restart; an idle mount's shipper sleeps."""
        task_status.started()
        while True:
            await self._until_work()
            self.flush()
            if self._channel is not None:
                self._take_reports()
            self._restart_if_exited()

    async def _until_work(self) -> None:
        channel = self._channel
        if channel is None:  # the export process died: start another after the pause
            await trio.sleep(max(self._started + RESTART_PAUSE - time.monotonic(), 0.0))
            return
        if not self._pending:
            self._record_arrived = trio.Event()
            try:
                async with trio.open_nursery() as nursery:
                    for wait in (self._record_arrived.wait, partial(trio.lowlevel.wait_readable, channel)):
                        nursery.start_soon(_cancel_when_done, wait, nursery.cancel_scope)
            finally:
                self._record_arrived = None
        if self._pending:
            await trio.sleep(FLUSH_INTERVAL)  # let the batch fill

    def close(self, timeout: float = EXIT_TIMEOUT) -> None:
        """Send what is pending, then let the export process export everything and exit."""
        channel, process = self._channel, self._process
        if channel is not None:
            if self._pending:
                channel.settimeout(timeout)  # the mount is gone: waiting for room no longer costs any I/O
                batch, self._pending = self._pending, []
                self._send(batch)
            with contextlib.suppress(OSError):  # it may have gone already
                channel.shutdown(socket.SHUT_WR)
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("the span export process did not finish within %g s; stopping it", timeout)
                process.kill()
                process.wait()
        if channel is not None:
            channel.close()
        self._channel = self._process = None


async def _cancel_when_done(wait: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    """Wait, then cancel ``scope``: the first of several waits in one nursery ends them all."""
    await wait()
    scope.cancel()
