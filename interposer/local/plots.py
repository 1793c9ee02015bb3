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
from matplotlib.ticker import FuncFormatter, LogLocator

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
class Series:
    """One labelled time series from a range query."""

    label: str
    times: list[float]
    values: list[float]


@dataclass
class Chart:
    """An SVG chart and how many data points it drew: a panel without data says so instead."""

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


def human_seconds(value: float, _position: object = None) -> str:
    """0.0005 -> '500 µs': durations as people read them."""
    if value >= 1:
        return f"{value:.3g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} µs"


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
        points += len(item.values)
    _time_axis(axes, start, end)
    axes.set_ylabel(unit)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    _legend(axes)
    return Chart(_svg(figure), points)


def byte_rates(series: Sequence[Series], start: float, end: float) -> Chart:
    """Bytes per second in the binary unit that suits the largest value, every series above zero."""
    factor, unit = byte_unit(max((value for item in series for value in item.values), default=0.0))
    scaled = [Series(item.label, item.times, [value / factor for value in item.values]) for item in series]
    return lines(scaled, start, end, f"{unit}/s")


def latency(series: Sequence[Series], start: float, end: float) -> Chart:
    """One latency quantile per operation, on a log scale (FUSE requests span microseconds to seconds)."""
    figure, axes = _figure()
    colours = _colours([item.label for item in series])
    points = 0
    for item in series:
        kept = [(t, v) for t, v in zip(item.times, item.values, strict=True) if math.isfinite(v) and v > 0]
        if kept:  # NaN where the operation had no requests
            axes.plot(_times([t for t, _ in kept]), [v for _, v in kept], label=item.label, color=colours[item.label])
            points += len(kept)
    _time_axis(axes, start, end)
    if points:
        axes.set_yscale("log")
        axes.yaxis.set_major_locator(LogLocator(base=10))
        axes.yaxis.set_major_formatter(FuncFormatter(human_seconds))
    axes.set_ylabel("request duration")
    axes.grid(alpha=0.3)
    _legend(axes)
    return Chart(_svg(figure), points)


def heatmap(
    bounds: Sequence[float], times: Sequence[float], rows: Sequence[Sequence[float]], start: float, end: float
) -> Chart:
    """Requests per second in each duration bucket over time: time across, duration up (log), count as colour."""
    figure, axes = _figure()
    points = sum(1 for row in rows for value in row if value > 0)
    if rows and times:
        step = (times[-1] - times[0]) / max(len(times) - 1, 1) or 1.0
        edges_x = _times([t - step / 2 for t in times] + [times[-1] + step / 2])
        edges_y = [bounds[0] / 2.5, *bounds]  # the lowest bucket drawn as tall as the others on a log scale
        mesh = axes.pcolormesh(edges_x, edges_y, rows, cmap="Oranges", shading="flat")
        scale = figure.add_axes((PLOT_AREA["right"] + 0.015, PLOT_AREA["bottom"], 0.012, 0.76))
        figure.colorbar(mesh, cax=scale).set_label("requests/s")
        axes.set_yscale("log")
        axes.yaxis.set_major_formatter(FuncFormatter(human_seconds))
    _time_axis(axes, start, end)
    axes.set_ylabel("request duration")
    return Chart(_svg(figure), points)
