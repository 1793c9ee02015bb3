"""The fault layer: makes storage misbehave exactly where the rules say, and says so on the request.

Every action is reported on the ``Op``: ``op.fault`` names the most
consequential one (errno, short, corrupt, attributes, latency, in that
order) for the metrics label, and each action adds a ``fuse.fault.injected``
event with its details for the span.  A delay is a ``trio.sleep``, so a
delayed request never holds up any other.
"""

from __future__ import annotations

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
from ...fuse.request import Op
from ...names import (
    ATTR_FAULT,
    ATTR_FAULT_BYTES,
    ATTR_FAULT_DELAY,
    ATTR_FAULT_ERRNO,
    ATTR_FAULT_OFFSET,
    ATTR_FAULT_RULE,
    EVENT_FAULT,
    FILE_OPENS,
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

_DATA = frozenset({OpName.READ, OpName.WRITE})
_WITH_ATTRIBUTES = frozenset(
    {OpName.GETATTR, OpName.LOOKUP, OpName.SETATTR, OpName.MKDIR, OpName.MKNOD, OpName.SYMLINK, OpName.LINK}
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

    def fires(self, op: Op, commands: ProcessNames) -> bool:
        """Whether the rule fires on this call; counts the call if its static match holds."""
        match = self.rule.match
        if self.operations and op.name not in self.operations:
            return False
        if not self.starts <= time.monotonic() < self.ends:
            return False
        if match.pids or match.uids or match.commands:
            pid, uid = op.caller()
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

    async def __call__(self, op: Op, call_next: NextCall) -> Any:
        rule = next((state for state in self.rules if state.fires(op, self._commands)), None)
        if rule is None:
            return await call_next(op)
        return await self._act(rule, op, call_next)

    async def _act(self, rule: RuleState, op: Op, call_next: NextCall) -> Any:
        action = rule.rule.action
        kinds: list[str] = []
        if action.latency is not None:
            delay = min(sample_latency(action.latency, rule.rng), MAX_LATENCY)
            self._report(op, rule, "latency", {ATTR_FAULT_DELAY: delay})
            kinds.append("latency")
            await trio.sleep(delay)
        if action.errno is not None:
            symbol = self._errno(action.errno, op.name, rule.rng)
            self._report(op, rule, "errno", {ATTR_FAULT_ERRNO: symbol})
            op.fault = "errno"
            raise OSError(getattr(errno, symbol), f"injected by fault rule {rule.name}")
        if action.short is not None and op.name in _DATA:
            self._shorten(op, action.short, rule)
            kinds.append("short")
        if action.corrupt is not None and action.corrupt.on == "write" and op.name is OpName.WRITE:
            op.data, at = corrupted(op.data, action.corrupt, rule.rng)
            self._report(op, rule, "corrupt", {ATTR_FAULT_OFFSET: op.offset + at})
            kinds.append("corrupt")
        result = await call_next(op)
        if action.corrupt is not None and action.corrupt.on == "read" and op.name is OpName.READ:
            result, at = corrupted(result, action.corrupt, rule.rng)
            self._report(op, rule, "corrupt", {ATTR_FAULT_OFFSET: op.offset + at})
            kinds.append("corrupt")
        if action.attributes is not None and op.name in _WITH_ATTRIBUTES | FILE_OPENS:
            _override(_attributes_in(result), action.attributes)
            self._report(op, rule, "attributes", {})
            kinds.append("attributes")
        op.fault = min(kinds, key=_SEVERITY.index) if kinds else None
        return result

    def _shorten(self, op: Op, share: float, rule: RuleState) -> None:
        if op.name is OpName.READ:
            op.size = max(1, int(op.size * share))
        else:
            op.data = op.data[: max(1, int(len(op.data) * share))]
        self._report(op, rule, "short", {ATTR_FAULT_BYTES: op.size if op.name is OpName.READ else len(op.data)})

    @staticmethod
    def _errno(spec: str | dict[str, float], name: OpName, rng: random.Random) -> str:
        if spec == "default":
            spec = DEFAULT_ERRNO.get(name, FALLBACK_ERRNO)
        if isinstance(spec, str):
            return spec
        symbols = list(spec)
        return rng.choices(symbols, weights=[spec[symbol] for symbol in symbols])[0]

    @staticmethod
    def _report(op: Op, rule: RuleState, kind: str, details: dict[str, Any]) -> None:
        if op.events is None:
            op.events = []
        op.events.append((EVENT_FAULT, {ATTR_FAULT: kind, ATTR_FAULT_RULE: rule.name, **details}))

    def counters(self) -> list[dict[str, Any]]:
        """Per rule: how many calls matched it and how many times it fired."""
        return [{"rule": state.name, "matched": state.matched, "fired": state.fired} for state in self.rules]


_SEVERITY = ("errno", "short", "corrupt", "attributes", "latency")


def _attributes_in(result: Any) -> pyfuse3.EntryAttributes:
    """create returns (file info, attributes); the others return the attributes."""
    attributes: pyfuse3.EntryAttributes = result[1] if isinstance(result, tuple) else result
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
