"""The report's time window and rate window, fitted to the mount's data.

A fixed hour leaves a two-minute run in the last 3% of every chart, so by
default the window spans the first to the last sample of the mount's request
series (looked for over the last day), with a little margin; ``--since``
still covers the last N seconds instead.  The rate window follows Grafana's
``$__rate_interval``: four scrape intervals, or one step plus one scrape
interval if that is longer, so every rate has samples to work with at any
zoom; the scrape interval is read from the data itself (samples per second
of the longest series), which holds for a scraped mount and for a collector
alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..names import OPERATION_DURATION
from .prometheus import Prometheus

LOOKBACK = 24 * 3600.0
"""How far back the default window looks for the mount's data."""
POINTS = 240
"""Points per series in a chart: the step is the window divided by this."""
MIN_WIDTH = 30.0
"""The narrowest window drawn, so a run of a few seconds still has a readable time axis."""
DEFAULT_SCRAPE = 15.0
"""The scrape interval assumed when the data is too short to tell (one sample per series)."""
_COARSE = 4000
"""Steps of the first search for the data's start over the lookback; a second search refines it."""


@dataclass(frozen=True)
class Window:
    """What the report covers: ``start``..``end`` in Unix seconds, sampled every ``step``, rates over ``rate``."""

    start: float
    end: float
    step: float
    rate: str
    first: float | None
    """The first sample of the mount's data in the window (None: no data)."""
    last: float | None

    @property
    def seconds(self) -> float:
        return self.end - self.start


def _extent(prometheus: Prometheus, selector: str, lookback: float) -> tuple[float, float] | None:
    """The first and last sample times of the selected request series within ``lookback`` seconds of the end."""
    series = f"timestamp({OPERATION_DURATION.series('count')}{selector})"
    resolution = max(math.ceil(lookback / _COARSE), 1)
    last = prometheus.scalar(f"max(max_over_time({series}[{lookback:.0f}s:{resolution}s]))")
    coarse = prometheus.scalar(f"min(min_over_time({series}[{lookback:.0f}s:{resolution}s]))")
    if last is None or coarse is None:
        return None
    # timestamp() at a coarse step may see a later sample than the first: look again, finely, just before it.
    first = prometheus.scalar(f"min(min_over_time({series}[{2 * resolution}s:1s]))", at=coarse)
    return (coarse if first is None else min(first, coarse)), last


def _scrape_interval(prometheus: Prometheus, selector: str, first: float, last: float) -> float:
    samples = prometheus.scalar(
        f"max(count_over_time({OPERATION_DURATION.series('count')}{selector}[{max(last - first, 1):.0f}s]))", at=last
    )
    if samples is None or samples < 2:
        return DEFAULT_SCRAPE
    return (last - first) / (samples - 1)


def fit(
    prometheus: Prometheus, selector: str, now: float, since: float | None, rate: str | None, lookback: float = LOOKBACK
) -> Window:
    """The window of the selected series: the last ``since`` seconds, or by default the span of their data
    within the last ``lookback`` seconds."""
    lookback = since or lookback
    extent = _extent(prometheus, selector, lookback)
    if since is not None:
        start, end = now - since, now
    elif extent is None:
        start, end = now - MIN_WIDTH, now
    else:
        first, last = extent
        margin = max((last - first) * 0.03, 5.0, (MIN_WIDTH - (last - first)) / 2)
        end = min(last + margin, now)
        start = min(first - margin, end - MIN_WIDTH)
    step = max((end - start) / POINTS, 1.0)
    if rate is None:
        interval = DEFAULT_SCRAPE if extent is None else _scrape_interval(prometheus, selector, *extent)
        rate = f"{math.ceil(max(4 * interval, step + interval))}s"
    return Window(start, end, step, rate, *(extent or (None, None)))
