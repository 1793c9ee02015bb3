"""The report's parts that need no server: its window, its units, its collapsed sessions, its housekeeping."""

from __future__ import annotations

import pytest

from interposer.local import plots, waterfall
from interposer.local.housekeeping import housekeeping_of
from interposer.local.prometheus import Prometheus
from interposer.local.traces import SpanRecord
from interposer.local.window import MIN_WIDTH, fit
from interposer.names import ATTR_ERROR_TYPE, ATTR_OPERATION, EVENT_FAULT


class _Data(Prometheus):
    """A Prometheus whose one mount sent samples every ``interval`` seconds from ``first`` to ``last``."""

    def __init__(self, first: float | None, last: float | None, interval: float = 5.0) -> None:
        super().__init__("http://127.0.0.1:1", 0, 0, 1)
        self.first, self.last, self.interval = first, last, interval

    def scalar(self, promql: str, at: float | None = None) -> float | None:
        if self.first is None or self.last is None:
            return None
        if promql.startswith("max(max_over_time"):
            return self.last
        if promql.startswith("min(min_over_time"):
            return self.first
        assert promql.startswith("max(count_over_time"), promql
        return (self.last - self.first) / self.interval + 1


def test_the_window_spans_the_data_not_an_hour() -> None:
    now = 10_000.0
    window = fit(_Data(now - 600, now - 480), "{}", now, None, None)
    assert now - 600 - 10 < window.start < now - 600
    assert now - 480 < window.end < now - 480 + 10
    assert window.rate == "20s", "four scrape intervals of 5 s"
    assert (window.first, window.last) == (now - 600, now - 480)


def test_a_short_run_gets_a_readable_window_and_since_overrides() -> None:
    now = 10_000.0
    short = fit(_Data(now - 12, now - 10), "{}", now, None, None)
    assert short.end - short.start == pytest.approx(MIN_WIDTH)
    assert short.start < now - 12
    assert short.end <= now
    given = fit(_Data(now - 12, now - 10), "{}", now, 900, "1m")
    assert (given.start, given.end, given.step, given.rate) == (now - 900, now, 900 / 240, "1m")
    empty = fit(_Data(None, None), "{}", now, None, None)
    assert empty.first is None
    assert empty.end == now


def test_one_unit_per_axis_chosen_from_the_data() -> None:
    assert plots.duration_unit(0.0004) == (1e-6, "µs")
    assert plots.duration_unit(0.025) == (1e-3, "ms")
    assert plots.duration_unit(3.0) == (1.0, "s")
    assert [plots.human_seconds(value) for value in (0.00002, 0.0123, 2.5)] == ["20 µs", "12.3 ms", "2.5 s"]
    assert [plots._plain(value) for value in (0.01, 0.5, 20.0, 1500.0)] == ["0.01", "0.5", "20", "1,500"]
    assert [plots.human_duration(value) for value in (43, 125, 3600)] == ["43 s", "2 min 5 s", "1 h"]


def _span(operation: str, start_us: int, error: str = "", injected: bool = False) -> SpanRecord:
    attributes = {ATTR_OPERATION: operation, **({ATTR_ERROR_TYPE: error} if error else {})}
    return SpanRecord(
        "t" * 32,
        f"{start_us:016x}",
        "p",
        f"fuse.{operation}",
        start_us * 1000,
        start_us * 1000 + 20_000,
        attributes,
        bool(error),
        [EVENT_FAULT] if injected else [],
    )


def test_a_run_of_one_operation_is_one_row_with_its_count_and_total() -> None:
    spans = [_span("create", 0), *(_span("write", 100 + 30 * index) for index in range(30)), _span("flush", 2000)]
    spans += [_span("fsync", 3000, injected=True), _span("open", 4000, "EIO"), _span("open", 5000, "EIO")]
    rows = waterfall.collapse(spans)
    assert [row.label() for row in rows] == [
        "create 20 µs",
        "write x30 600 µs total",
        "flush 20 µs",
        "fsync 20 µs injected",
        "open x2 40 µs total EIO",
    ]
    assert (rows[1].start_ns, rows[1].end_ns) == (100_000, (100 + 29 * 30) * 1000 + 20_000)


def test_kernel_housekeeping_is_forget_and_the_capability_probes() -> None:
    assert housekeeping_of("forget", None) is not None
    assert housekeeping_of("getxattr", "ENODATA") is not None
    assert housekeeping_of("getxattr", None) is None, "a getxattr that found its attribute is the workload's"
    assert housekeeping_of("lookup", "ENOENT") is None, "an expected answer, but the workload asked"
    assert housekeeping_of("release", None) is None, "the application's close"
