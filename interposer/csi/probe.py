"""statvfs with a deadline: a hung FUSE server must not hang the RPC that asks about it.

A statvfs on a mount whose server stopped answering waits in the kernel; no
timeout can be set on the call.  It runs in a daemon thread, and the caller
waits at most ``timeout``.  A probe still stuck from an earlier call is
reused, not duplicated, so a hung mount holds at most one thread.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

Outcome = os.statvfs_result | OSError


class Prober:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._pending: dict[str, Future[Outcome]] = {}
        self._lock = threading.Lock()

    def statvfs(self, path: str) -> Outcome | None:
        """The path's statvfs, the OSError it raised, or None when it did not answer within the timeout."""
        with self._lock:
            future = self._pending.get(path)
            if future is None:
                future = Future()
                self._pending[path] = future
                threading.Thread(target=self._run, args=(path, future), daemon=True, name=f"statvfs {path}").start()
        try:
            return future.result(self.timeout)
        except FutureTimeout:
            return None

    def _run(self, path: str, future: Future[Outcome]) -> None:
        try:
            outcome: Outcome = os.statvfs(path)
        except OSError as exc:
            outcome = exc
        with self._lock:
            del self._pending[path]
        future.set_result(outcome)
