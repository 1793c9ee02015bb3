"""The report's charts, drawn the way a good dashboard panel is: time on the x-axis, units on the y-axis.

Each chart is an SVG with its text kept as text (so the page's font renders it and a test can read it),
no title of its own (the page gives each panel one heading), and a legend only as long as the series
plotted: the busiest few, each in a colour of its own, with the rest summed as "other".
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure as MatplotlibFigure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, ScalarFormatter

from .prometheus import Series

plt.rcParams.update({"svg.fonttype": "none", "font.family": "sans-serif", "font.size": 9})

OTHER = "other"
"""The series that sums everything below the busiest few."""
_PALETTE: list[str] = plt.rcParams["axes.prop_cycle"].by_key()["color"]
"""Matplotlib's ten distinct default colours (tab10)."""
_OTHER_COLOUR = "#999999"
WIDTH, HEIGHT = 10.0, 2.8
"""Inches of every chart."""
PLOT_AREA = {"left": 0.09, "right": 0.8, "bottom": 0.2, "top": 0.96}
"""Where the axes sit in every chart, as fractions: the same everywhere, so the time axes of the panels line
up as on a dashboard, with the legend (or colour bar) in the space on the right."""


@dataclass
class Chart:
    """An SVG chart and how many data points it drew that are not zero: a panel without any says so instead."""

    svg: str
    points: int


_ZONE = datetime.now().astimezone().tzinfo
"""Times are shown in this machine's time zone, named in the axis label."""


def _times(values: Sequence[float]) -> list[float]:
    """Unix times as matplotlib's date numbers."""
    return [float(mdates.date2num(datetime.fromtimestamp(value, _ZONE))) for value in values]  # type: ignore[no-untyped-call]


def _time_axis(axes: Axes, start: float, end: float) -> None:
    left, right = _times([start, end])
    axes.set_xlim(left, right)
    axes.xaxis.set_major_locator(mdates.AutoDateLocator(tz=_ZONE, minticks=4, maxticks=10))  # type: ignore[no-untyped-call]
    clock = "%H:%M:%S" if end - start < 600 else "%H:%M"
    axes.xaxis.set_major_formatter(mdates.DateFormatter(clock, tz=_ZONE))  # type: ignore[no-untyped-call]
    axes.set_xlabel(f"time ({time.strftime('%Z')})")


def binary_bytes(value: float) -> str:
    """1536 -> '1.5 KiB': bytes as people read them."""
    factor, unit = byte_unit(value)
    return f"{value / factor:.3g} {unit}"


def human_seconds(value: float) -> str:
    """0.0005 -> '500 µs': one duration as people read it (tables, waterfalls)."""
    factor, unit = duration_unit(value)
    return f"{value / factor:.3g} {unit}"


def human_duration(seconds: float) -> str:
    """A time span as people say it: '43 s', '2 min 5 s', '1 h 3 min'."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    big, small = (
        (f"{whole // 60} min", f"{whole % 60} s")
        if whole < 3600
        else (f"{whole // 3600} h", f"{whole % 3600 // 60} min")
    )
    return big if small.startswith("0 ") else f"{big} {small}"


def duration_unit(largest: float) -> tuple[float, str]:
    """The unit that suits durations up to ``largest`` seconds: (seconds per unit, its name).

    One unit per axis, chosen from its data, so its ticks never mix seconds with microseconds."""
    if largest >= 1:
        return 1.0, "s"
    if largest >= 1e-3:
        return 1e-3, "ms"
    return 1e-6, "µs"


def _plain(value: float, _position: object = None) -> str:
    """A tick as a plain number in the axis's unit: 0.05, 2, 250 (never in scientific notation, never an offset)."""
    return f"{value:,.6f}".rstrip("0").rstrip(".")


def _plain_axis(axes: Axes) -> None:
    """Linear y ticks as plain numbers, without the scientific multiplier matplotlib adds to large or small ones."""
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    axes.yaxis.set_major_formatter(formatter)


def _one_two_five(value: float, up: bool) -> float:
    """The nearest 1-2-5 step (…, 0.5, 1, 2, 5, 10, …) at or below ``value``, or at or above it when ``up``."""
    decade = 10.0 ** math.floor(math.log10(value))
    steps = [decade * base for base in (1, 2, 5, 10)]
    return min(s for s in steps if s >= value * (1 - 1e-9)) if up else max(s for s in steps if s <= value * (1 + 1e-9))


def _log_axis(axes: Axes, low: float, high: float) -> None:
    """A log y-axis with plain-number ticks: 1-2-5 steps when the data spans three decades or less."""
    axes.set_yscale("log")
    narrow = high / max(low, 1e-12) <= 1000
    axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
    axes.yaxis.set_major_formatter(FuncFormatter(_plain))
    axes.yaxis.set_minor_formatter(NullFormatter())


def _colours(labels: Sequence[str]) -> dict[str, str]:
    colours: dict[str, str] = {}
    for index, label in enumerate(label for label in labels if label != OTHER):
        colours[label] = _PALETTE[index % len(_PALETTE)]
    colours[OTHER] = _OTHER_COLOUR
    return colours


def _figure() -> tuple[MatplotlibFigure, Axes]:
    figure, axes = plt.subplots(figsize=(WIDTH, HEIGHT))
    figure.subplots_adjust(**PLOT_AREA)
    return figure, axes


def byte_unit(largest: float) -> tuple[float, str]:
    """The binary unit that suits values up to ``largest``: (bytes per unit, its name)."""
    factor, unit = 1.0, "B"
    for name in ("KiB", "MiB", "GiB"):
        if largest < factor * 1024:
            break
        factor, unit = factor * 1024, name
    return factor, unit


def _svg(figure: MatplotlibFigure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _legend(axes: Axes) -> None:
    """Beside the plot, never over the data."""
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize="small")


def lines(series: Sequence[Series], start: float, end: float, unit: str) -> Chart:
    """One line per series, labelled in the legend, in the order given (the busiest first)."""
    figure, axes = _figure()
    colours = _colours([item.label for item in series])
    points = 0
    for item in series:
        axes.plot(_times(item.times), item.values, label=item.label, color=colours[item.label], linewidth=1.4)
        points += sum(1 for value in item.values if value)
    _time_axis(axes, start, end)
    axes.set_ylabel(unit)
    axes.set_ylim(bottom=0)
    _plain_axis(axes)
    axes.grid(alpha=0.3)
    _legend(axes)
    return Chart(_svg(figure), points)


def byte_rates(series: Sequence[Series], start: float, end: float) -> Chart:
    """Bytes per second in the binary unit that suits the largest value, every series above zero."""
    factor, unit = byte_unit(max((value for item in series for value in item.values), default=0.0))
    scaled = [Series(item.label, item.times, [value / factor for value in item.values]) for item in series]
    return lines(scaled, start, end, f"{unit}/s")


def latency(series: Sequence[Series], start: float, end: float, quantile: str) -> Chart:
    """One latency quantile per operation, on a log scale (FUSE requests span microseconds to seconds),
    in the one unit that suits the slowest value drawn."""
    kept = {
        item.label: [(t, v) for t, v in zip(item.times, item.values, strict=True) if math.isfinite(v) and v > 0]
        for item in series
    }  # NaN where the operation had no requests
    values = [v for pairs in kept.values() for _, v in pairs]
    factor, unit = duration_unit(max(values, default=0.0))
    figure, axes = _figure()
    colours = _colours([item.label for item in series])
    for label, pairs in kept.items():
        if pairs:
            axes.plot(_times([t for t, _ in pairs]), [v / factor for _, v in pairs], label=label, color=colours[label])
    _time_axis(axes, start, end)
    if values:
        low, high = _one_two_five(min(values) / factor, up=False), _one_two_five(max(values) / factor, up=True)
        axes.set_ylim(low, high if high > low else low * 2)  # ticks at both ends, however narrow the data
        _log_axis(axes, low, high)
    axes.set_ylabel(f"{quantile} duration ({unit})")
    axes.grid(alpha=0.3)
    _legend(axes)
    return Chart(_svg(figure), len(values))


def heatmap(
    bounds: Sequence[float], times: Sequence[float], rows: Sequence[Sequence[float]], start: float, end: float
) -> Chart:
    """Requests per second in each duration bucket over time: time across, duration up (log), count as colour.

    Only the buckets from the fastest to the slowest with any requests are drawn, so the data fills the
    height, in the one unit that suits the slowest."""
    peak = max((value for row in rows for value in row), default=0.0)
    used = [index for index, row in enumerate(rows) if any(value > peak * 1e-9 for value in row)]  # not rounding
    figure, axes = _figure()
    unit = "s"
    if used and times:
        low, high = used[0], used[-1] + 1
        factor, unit = duration_unit(bounds[high - 1])
        step = (times[-1] - times[0]) / max(len(times) - 1, 1) or 1.0
        edges_x = _times([t - step / 2 for t in times] + [times[-1] + step / 2])
        lower = bounds[low - 1] if low else bounds[0] / 2.5  # the lowest bucket drawn as tall as the others
        edges_y = [lower / factor, *(bound / factor for bound in bounds[low:high])]
        mesh = axes.pcolormesh(edges_x, edges_y, rows[low:high], cmap="Oranges", shading="flat")
        scale = figure.add_axes((PLOT_AREA["right"] + 0.015, PLOT_AREA["bottom"], 0.012, 0.76))
        figure.colorbar(mesh, cax=scale).set_label("requests/s")
        _log_axis(axes, edges_y[0], edges_y[-1])
    _time_axis(axes, start, end)
    axes.set_ylabel(f"request duration ({unit})")
    return Chart(_svg(figure), sum(1 for index in used for value in rows[index] if value > peak * 1e-9))
