"""The fault layer: makes storage misbehave exactly where the rules say, and says so in the request's notes.

Every action is reported in the ``Notes``: ``notes.fault`` names the most
consequential one (errno, short, corrupt, attributes, latency, in that
order) for the metrics label, and each action adds a ``fuse.fault.injected``
event with its details for the span.  A delay is a ``trio.sleep``, so a
delayed request never holds up any other.  Housekeeping the kernel never
retries (forget, release, releasedir) is never faulted: failing it would leak
the handle or inode for good.  What a fault changes goes inward as a copy of
the request, and outward as a new reply.
"""

from __future__ import annotations

import copy
import errno
import fnmatch
import math
import random
import re
import time
from typing import Any

import pyfuse3
import trio

from ...fuse.callers import ProcessNames
from ...fuse.pipeline import NextCall
from ...fuse.request import Notes, Reply, Request
from ...names import (
    ATTR_FAULT,
    ATTR_FAULT_BYTES,
    ATTR_FAULT_DELAY,
    ATTR_FAULT_ERRNO,
    ATTR_FAULT_OFFSET,
    ATTR_FAULT_RULE,
    DIRECTION_READ,
    DIRECTION_WRITE,
    EVENT_FAULT,
    OpName,
)
from .model import (
    DEFAULT_ERRNO,
    FALLBACK_ERRNO,
    MAX_LATENCY,
    AttributeOverride,
    Corruption,
    ExponentialLatency,
    FaultRule,
    FaultsConfig,
    FixedLatency,
    Latency,
    NormalLatency,
    ParetoLatency,
    UniformLatency,
)


def sample_latency(latency: Latency, rng: random.Random) -> float:
    """One delay in seconds from the configured distribution, never negative."""
    if isinstance(latency, FixedLatency):
        return latency.seconds
    if isinstance(latency, UniformLatency):
        return rng.uniform(latency.low, latency.high)
    if isinstance(latency, NormalLatency):
        return max(0.0, rng.gauss(latency.mean, latency.stddev))
    if isinstance(latency, ExponentialLatency):
        return rng.expovariate(1 / latency.mean)
    assert isinstance(latency, ParetoLatency)
    return latency.scale * rng.paretovariate(latency.shape)


def corrupted(data: bytes, corruption: Corruption, rng: random.Random) -> tuple[bytes, int]:
    """``data`` with up to ``max_bytes`` bytes damaged at a random place; and where."""
    if not data:
        return data, 0
    count = min(corruption.max_bytes, len(data))
    start = rng.randrange(len(data) - count + 1)
    damaged = bytearray(data)
    if corruption.mode == "zero":
        damaged[start : start + count] = bytes(count)
    elif corruption.mode == "random":
        damaged[start : start + count] = rng.randbytes(count)
    else:
        for index in range(start, start + count):
            damaged[index] ^= 1 << rng.randrange(8)
    return bytes(damaged), start


class RuleState:
    """A rule, its compiled globs, its own random generator and its counters."""

    def __init__(self, rule: FaultRule, index: int, seed: int, installed: float) -> None:
        self.rule = rule
        self.name = rule.name or f"rule-{index}"
        self.rng = random.Random(f"{seed}:{index}")
        self.operations = frozenset(rule.match.operations)
        self.paths = [re.compile(fnmatch.translate(pattern)) for pattern in rule.match.paths]
        self.starts = installed + rule.match.after_seconds
        self.ends = math.inf if rule.match.for_seconds is None else self.starts + rule.match.for_seconds
        self.matched = 0
        self.fired = 0

    def fires(self, op: Request, commands: ProcessNames) -> bool:
        """Whether the rule fires on this call; counts the call if its static match holds."""
        match = self.rule.match
        if self.operations and op.name not in self.operations:
            return False
        if not self.starts <= time.monotonic() < self.ends:
            return False
        if match.pids or match.uids or match.commands:
            pid, uid = op.pid, op.uid
            if match.pids and pid not in match.pids:
                return False
            if match.uids and uid not in match.uids:
                return False
            if match.commands and commands[pid] not in match.commands:
                return False
        if self.paths:
            path = op.path
            if not any(pattern.match(path) for pattern in self.paths):
                return False
        self.matched += 1
        ordinal = self.matched - match.after_calls
        if ordinal <= 0:
            return False
        if match.max_count is not None and self.fired >= match.max_count:
            return False
        if match.every_nth is not None and ordinal % match.every_nth:
            return False
        if match.only_nth is not None and ordinal != match.only_nth:
            return False
        if match.probability < 1 and self.rng.random() >= match.probability:
            return False
        self.fired += 1
        return True


class FaultLayer:
    """Inside throttling, outside the backend: the first matching rule acts on the request."""

    def __init__(self, config: FaultsConfig) -> None:
        installed = time.monotonic()
        self.config = config
        self.rules = [RuleState(rule, index, config.seed, installed) for index, rule in enumerate(config.rules)]
        self._commands = ProcessNames()

    async def __call__(self, op: Request, notes: Notes, call_next: NextCall) -> Reply:
        if op.traits.housekeeping:
            return await call_next(op, notes)
        rule = next((state for state in self.rules if state.fires(op, self._commands)), None)
        if rule is None:
            return await call_next(op, notes)
        return await self._act(rule, op, notes, call_next)

    async def _act(self, rule: RuleState, op: Request, notes: Notes, call_next: NextCall) -> Reply:
        action = rule.rule.action
        direction = op.traits.direction
        kinds: list[str] = []
        if action.latency is not None:
            delay = min(sample_latency(action.latency, rule.rng), MAX_LATENCY)
            _report(notes, rule, "latency", {ATTR_FAULT_DELAY: delay})
            kinds.append("latency")
            await trio.sleep(delay)
        if action.errno is not None:
            symbol = self._errno(action.errno, op.name, rule.rng)
            _report(notes, rule, "errno", {ATTR_FAULT_ERRNO: symbol})
            notes.fault = "errno"
            raise OSError(getattr(errno, symbol), f"injected by fault rule {rule.name}")
        inward = op
        if action.short is not None and direction is not None:
            inward = _shortened(op, action.short)
            moved = inward.size if direction is DIRECTION_READ else len(inward.data)
            _report(notes, rule, "short", {ATTR_FAULT_BYTES: moved})
            kinds.append("short")
        if action.corrupt is not None and action.corrupt.on == "write" and direction is DIRECTION_WRITE:
            data, at = corrupted(inward.data, action.corrupt, rule.rng)
            inward = inward.with_changes(data=data)
            _report(notes, rule, "corrupt", {ATTR_FAULT_OFFSET: op.offset + at})
            kinds.append("corrupt")
        reply = await call_next(inward, notes)
        if action.corrupt is not None and action.corrupt.on == "read" and direction is DIRECTION_READ:
            data, at = corrupted(reply.value, action.corrupt, rule.rng)
            reply = reply.with_value(data)
            _report(notes, rule, "corrupt", {ATTR_FAULT_OFFSET: op.offset + at})
            kinds.append("corrupt")
        if action.attributes is not None and op.traits.returns_attributes:
            reply = reply.with_value(_overridden(reply.value, action.attributes))
            _report(notes, rule, "attributes", {})
            kinds.append("attributes")
        notes.fault = min(kinds, key=_SEVERITY.index) if kinds else None
        return reply

    @staticmethod
    def _errno(spec: str | dict[str, float], name: OpName, rng: random.Random) -> str:
        if spec == "default":
            spec = DEFAULT_ERRNO.get(name, FALLBACK_ERRNO)
        if isinstance(spec, str):
            return spec
        symbols = list(spec)
        return rng.choices(symbols, weights=[spec[symbol] for symbol in symbols])[0]

    def counters(self) -> list[dict[str, Any]]:
        """Per rule: how many calls matched it and how many times it fired."""
        return [{"rule": state.name, "matched": state.matched, "fired": state.fired} for state in self.rules]


_SEVERITY = ("errno", "short", "corrupt", "attributes", "latency")


def _report(notes: Notes, rule: RuleState, kind: str, details: dict[str, Any]) -> None:
    notes.event(EVENT_FAULT, {ATTR_FAULT: kind, ATTR_FAULT_RULE: rule.name, **details})


def _shortened(op: Request, share: float) -> Request:
    """The request with only ``share`` of its bytes to move (at least one)."""
    if op.traits.direction is DIRECTION_READ:
        return op.with_changes(size=max(1, int(op.size * share)))
    return op.with_changes(data=op.data[: max(1, int(len(op.data) * share))])


def _overridden(value: Any, override: AttributeOverride) -> Any:
    """The reply value with its attributes overridden: a copy, create's (file info, attributes) included."""
    if isinstance(value, tuple):
        info, entry = value
        return info, _overridden(entry, override)
    attributes: pyfuse3.EntryAttributes = copy.copy(value)
    _override(attributes, override)
    return attributes


def _override(attributes: pyfuse3.EntryAttributes, override: AttributeOverride) -> None:
    if override.size is not None:
        attributes.st_size = override.size
    if override.mode is not None:
        attributes.st_mode = (attributes.st_mode & ~0o7777) | override.mode
    for field, value in (
        ("st_mtime_ns", override.mtime),
        ("st_atime_ns", override.atime),
        ("st_ctime_ns", override.ctime),
    ):
        if value is not None:
            setattr(attributes, field, int(value * 1e9))
