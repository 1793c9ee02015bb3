"""Fault rules: an ordered list, each a match part and an action part, validated before anything applies.

The first rule whose match holds fires.  Counting conditions (``after_calls``,
``every_nth``, ``only_nth``, ``max_count``) count the calls that pass the
static part of the match (operations, paths, caller, time window); the
probability is drawn last, from the rule's own generator seeded with the
config's seed and the rule's position, so the same seed and the same
sequence of operations give the same faults.
"""

from __future__ import annotations

import errno
import fnmatch
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ...names import OpName
from ...section import Section

MAX_LATENCY = 600.0
"""No injected delay exceeds this many seconds, whatever the distribution draws."""

DEFAULT_ERRNO: dict[OpName, str | dict[str, float]] = {
    OpName.READ: "EIO",
    OpName.WRITE: {"ENOSPC": 3, "EDQUOT": 1},
    OpName.OPEN: "EACCES",
    OpName.CREATE: {"ENOSPC": 1, "EACCES": 1},
    OpName.OPENDIR: "EACCES",
    OpName.FSYNC: "EIO",
    OpName.FLUSH: "EIO",
    OpName.MKDIR: "ENOSPC",
    OpName.MKNOD: "ENOSPC",
    OpName.SYMLINK: "ENOSPC",
    OpName.LINK: "EMLINK",
    OpName.SETXATTR: "ENOSPC",
    OpName.LOOKUP: "EIO",
}
"""What a rule with ``errno: default`` returns, per operation: what real storage returns most often."""
FALLBACK_ERRNO = "EIO"


def _check_errno(symbol: str) -> str:
    if not hasattr(errno, symbol) or not symbol.startswith("E"):
        raise ValueError(f"{symbol!r} is not an errno symbol; allowed: EIO, ENOSPC, EACCES, … (see errno(3))")
    return symbol


class FixedLatency(Section):
    kind: Literal["fixed"]
    seconds: float = Field(ge=0, le=MAX_LATENCY)


class UniformLatency(Section):
    kind: Literal["uniform"]
    low: float = Field(ge=0, le=MAX_LATENCY)
    high: float = Field(ge=0, le=MAX_LATENCY)

    @model_validator(mode="after")
    def _ordered(self) -> UniformLatency:
        if self.high < self.low:
            raise ValueError("high must be at least low")
        return self


class NormalLatency(Section):
    kind: Literal["normal"]
    mean: float = Field(ge=0, le=MAX_LATENCY)
    stddev: float = Field(ge=0, le=MAX_LATENCY)


class ExponentialLatency(Section):
    kind: Literal["exponential"]
    mean: float = Field(gt=0, le=MAX_LATENCY)


class ParetoLatency(Section):
    """A heavy tail: most delays near ``scale``, a few far longer (``shape`` > 1 keeps the mean finite)."""

    kind: Literal["pareto"]
    scale: float = Field(gt=0, le=MAX_LATENCY)
    shape: float = Field(gt=0, le=100)


Latency = Annotated[
    FixedLatency | UniformLatency | NormalLatency | ExponentialLatency | ParetoLatency, Field(discriminator="kind")
]


class Corruption(Section):
    """Damage to data in flight; the backing file keeps what the application wrote unless ``on`` is write."""

    on: Literal["read", "write"] = Field("read", description="Corrupt what is read, or what reaches the disk.")
    mode: Literal["bitflip", "zero", "random"] = Field("bitflip")
    max_bytes: int = Field(1, ge=1, le=1 << 20, description="Most bytes damaged per request.")


class AttributeOverride(Section):
    """What getattr, lookup and the calls that return attributes report instead of the truth."""

    size: int | None = Field(None, ge=0)
    mode: int | None = Field(None, ge=0, le=0o7777, description="Permission bits (the file type is kept).")
    mtime: float | None = Field(None, description="Seconds since the epoch.")
    atime: float | None = None
    ctime: float | None = None


class FaultMatch(Section):
    """Which calls a rule applies to.  Every given condition must hold; an empty list matches anything."""

    operations: tuple[OpName, ...] = ()
    paths: tuple[str, ...] = Field((), description="Globs on the path below the mount root, such as /db/*.wal.")
    pids: tuple[int, ...] = ()
    commands: tuple[str, ...] = Field((), description="Caller command names, as in /proc/PID/comm.")
    uids: tuple[int, ...] = ()
    probability: float = Field(1.0, ge=0, le=1)
    every_nth: int | None = Field(None, ge=1, description="Fire on the n-th, 2n-th, … matching call.")
    only_nth: int | None = Field(None, ge=1, description="Fire on the n-th matching call only.")
    after_calls: int = Field(0, ge=0, description="Let this many matching calls through first.")
    after_seconds: float = Field(0.0, ge=0, description="Start this long after the rules were installed.")
    for_seconds: float | None = Field(None, gt=0, description="Stop this long after starting.")
    max_count: int | None = Field(None, ge=1, description="Fire at most this many times.")

    @field_validator("paths")
    @classmethod
    def _globs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if not pattern.startswith("/"):
                raise ValueError(f"{pattern!r}: a path glob starts with / (the mount root)")
            if ".." in pattern.split("/"):
                raise ValueError(f"{pattern!r}: '..' is not allowed; paths are below the mount root")
            if pattern.count("[") != pattern.count("]"):
                raise ValueError(f"{pattern!r}: unbalanced [ ] in the glob")
            try:
                re.compile(fnmatch.translate(pattern))
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid glob: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_nth(self) -> FaultMatch:
        if self.every_nth is not None and self.only_nth is not None:
            raise ValueError("every_nth and only_nth exclude each other")
        return self


class FaultAction(Section):
    """What a firing rule does.  Latency comes first; then an error, or a change to what the call moves."""

    errno: str | dict[str, float] | None = Field(
        None,
        description="An errno symbol, 'default' (realistic per operation), or weights like {ENOSPC: 3, EDQUOT: 1}.",
    )
    latency: Latency | None = None
    short: float | None = Field(
        None, gt=0, lt=1, description="Reads and writes move only this share of the requested bytes."
    )
    corrupt: Corruption | None = None
    attributes: AttributeOverride | None = None

    @field_validator("errno")
    @classmethod
    def _errnos(cls, value: str | dict[str, float] | None) -> str | dict[str, float] | None:
        if isinstance(value, str) and value != "default":
            _check_errno(value)
        elif isinstance(value, dict):
            if not value:
                raise ValueError("weights must name at least one errno")
            for symbol, weight in value.items():
                _check_errno(symbol)
                if weight <= 0:
                    raise ValueError(f"the weight of {symbol} must be positive")
        return value

    @model_validator(mode="after")
    def _something(self) -> FaultAction:
        if not any((self.errno, self.latency, self.short, self.corrupt, self.attributes)):
            raise ValueError("a rule needs at least one of errno, latency, short, corrupt, attributes")
        if self.errno is not None and (self.short or self.corrupt):
            raise ValueError("errno fails the call; it cannot be combined with short or corrupt")
        return self


class FaultRule(Section):
    name: str = Field("", max_length=64, description="Shown in status and on spans.")
    match: FaultMatch = FaultMatch()
    action: FaultAction


class FaultsConfig(Section):
    """Fault injection: off unless rules are given."""

    enabled: bool = Field(True, description="Apply the rules (the layer is present whenever rules exist).")
    seed: int = Field(0, description="Seed of the rules' random draws: the same seed gives the same faults.")
    rules: tuple[FaultRule, ...] = ()
