"""The throttle layer: token buckets for bandwidth and IOPS, shared by the whole mount.

A bucket may go into debt: each request takes its tokens on arrival, in
arrival order, and waits until the debt it leaves is paid back at the
sustained rate.  That serves waiters first come, first served, and lets a
request larger than the burst through after a proportional wait.  Waiting
is a ``trio.sleep``, so a throttled request never stalls a request that
does not use the same bucket, and fail mode answers EAGAIN without waiting.
"""

from __future__ import annotations

import errno
import time
from typing import Any

import trio

from ...fuse.pipeline import NextCall
from ...fuse.request import Notes, Reply, Request
from ...names import ATTR_THROTTLE_LIMIT, ATTR_THROTTLE_WAIT, DIRECTION_READ, DIRECTION_WRITE, EVENT_THROTTLE
from .model import Limit, ThrottleConfig


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; requests take tokens in arrival order."""

    def __init__(self, name: str, limit: Limit) -> None:
        self.name = name
        self.rate = limit.rate
        self.burst = limit.burst if limit.burst is not None else limit.rate
        self.tokens = self.burst
        self.updated = time.monotonic()
        self.waits = 0
        self.waited = 0.0

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` tokens are available to a request arriving now (0: at once)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return max(0.0, (amount - self.tokens) / self.rate)

    def take(self, amount: float) -> None:
        """Take the tokens (possibly into debt) right after ``wait_for`` said how long that means waiting."""
        self.tokens -= amount


class ThrottleLayer:
    """Inside metrics and tracing (their durations include the wait), outside faults and the backend."""

    def __init__(self, config: ThrottleConfig) -> None:
        self.config = config
        self.buckets = {name: TokenBucket(name, limit) for name, limit in config.limits().items()}
        self.rejected = 0

    def _demands(self, op: Request) -> list[tuple[TokenBucket, float]]:
        buckets = self.buckets
        traits = op.traits
        wanted: tuple[tuple[str, int], ...]
        if traits.housekeeping:
            return []  # the kernel does not expect these to fail or wait
        if traits.direction is DIRECTION_READ:
            wanted = (("read_bytes", op.size), ("read_iops", 1))
        elif traits.direction is DIRECTION_WRITE:
            wanted = (("write_bytes", len(op.data)), ("write_iops", 1))
        else:
            wanted = (("metadata_iops", 1),)
        return [(buckets[name], amount) for name, amount in wanted if name in buckets]

    async def __call__(self, op: Request, notes: Notes, call_next: NextCall) -> Reply:
        demands = self._demands(op)
        if demands:
            waits = [(bucket.wait_for(amount), bucket) for bucket, amount in demands]
            wait, slowest = max(waits, key=lambda item: item[0])
            limit = self.config.max_wait if self.config.mode == "wait" else 0.0
            if wait > limit:
                self.rejected += 1
                raise OSError(errno.EAGAIN, f"over the {slowest.name} limit")
            for bucket, amount in demands:
                bucket.take(amount)
            if wait > 0:
                slowest.waits += 1
                slowest.waited += wait
                notes.event(EVENT_THROTTLE, {ATTR_THROTTLE_WAIT: wait, ATTR_THROTTLE_LIMIT: slowest.name})
                await trio.sleep(wait)
        return await call_next(op, notes)

    def counters(self) -> dict[str, Any]:
        """Per limit: how many requests waited and for how long in all; and how many were refused."""
        return {
            "rejected": self.rejected,
            "limits": {
                name: {"waits": bucket.waits, "waited_seconds": round(bucket.waited, 6)}
                for name, bucket in self.buckets.items()
            },
        }
