"""Paired comparisons: what holds on a machine whose speed moves.

Wall-clock figures swing here from run to run (the host's load moves, and
with it every subject's speed), so two subjects are compared within each
round, where the same load falls on both: one ratio per round.  The rounds'
ratios are summarised by their median and a distribution-free confidence
interval for it, read off the order statistics (the binomial sign-test
interval), which assumes nothing of the ratios' distribution.  Few rounds
give a wide interval at a stated confidence rather than a narrow one that
does not hold.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
"""The confidence wanted; fewer than six rounds cannot give it, and the interval says what they give."""


@dataclass(frozen=True)
class Interval:
    """The median of some values, and the interval from ``low`` to ``high`` that holds it with ``confidence``."""

    median: float
    low: float
    high: float
    confidence: float

    @classmethod
    def of(cls, values: Sequence[float], wanted: float = CONFIDENCE) -> Interval:
        """The narrowest pair of order statistics x(k), x(n+1-k) that covers the median with at least ``wanted``
        confidence; with too few values, the widest pair (min, max) and the confidence it has; with none, nothing
        (NaN) at no confidence."""
        ordered = sorted(values)
        count = len(ordered)
        if not count:
            return cls(math.nan, math.nan, math.nan, 0.0)

        def coverage(k: int) -> float:
            """P(x(k) <= median <= x(n+1-k)) = 1 - 2 P(Binomial(n, 1/2) < k)."""
            return 1 - 2 * sum(math.comb(count, below) for below in range(k)) / (1 << count)

        k = 1
        while 2 * (k + 1) <= count and coverage(k + 1) >= wanted:
            k += 1
        return cls(statistics.median(ordered), ordered[k - 1], ordered[count - k], coverage(k))

    def describe(self, digits: int = 2) -> str:
        """``median [low-high]`` as text, e.g. ``0.93 [0.88-1.01]``."""
        return f"{self.median:.{digits}f} [{self.low:.{digits}f}-{self.high:.{digits}f}]"


def paired_ratios(subject: Sequence[float], reference: Sequence[float]) -> list[float]:
    """Round by round, the subject's figure over the reference's (both measured under that round's load); a round
    where the reference measured nothing (a CPU time below the clock's tick) gives no ratio."""
    return [mine / theirs for mine, theirs in zip(subject, reference, strict=True) if theirs]
