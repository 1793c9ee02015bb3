"""The HTML report as a user sees it: laid out by headless Chromium, measured, and held to a dashboard's rules.

Shared by the report's test (tests/test_stack.py) and the demo's (tests/test_demo.py).
"""

from __future__ import annotations

import html
import itertools
import json
import re
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .conftest import require_command

GEOMETRY_SCRIPT = Path(__file__).with_name("report_geometry.js")
TIME_TICK = re.compile(r"^\d\d:\d\d(:\d\d)?$")
TRACE_ID = re.compile(r"\b[0-9a-f]{32}\b")
PLAIN_NUMBER = re.compile(r"^[\d,]+(\.\d+)?$")
"""A tick as a person reads it: no scientific notation (4x10^-4, 1e-05), no unit mixed into it."""
Y_UNIT = re.compile(r"(/s|per second| \((µs|ms|s)\))$")
"""Every y-axis names its unit: a rate, or a duration in one unit."""
HEADLINE = re.compile(
    r"^[\d,]+ requests, [\d,]+ failed.*, \S+ \S*B read, \S+ \S*B written, "
    r"(\d\d:\d\d:\d\d) to (\d\d:\d\d:\d\d) \S+ \(([^)]+)\)$"
)


def geometry(page: Path, scratch: Path) -> dict[str, Any]:
    """Lay the page out in headless Chromium and measure it (tests/report_geometry.js)."""
    chromium = require_command("chromium")
    measured = scratch / "measured.html"
    measured.write_text(page.read_text().replace("</body>", f"<script>{GEOMETRY_SCRIPT.read_text()}</script></body>"))
    rendered = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--window-size=1200,3000",
            "--dump-dom",
            f"file://{measured}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    found = re.search(r'<pre id="geometry">(.*?)</pre>', rendered.stdout, re.S)
    assert found, "the geometry script did not run:\n" + rendered.stdout[-2000:]
    measured_geometry: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return measured_geometry


def inside(inner: dict[str, float], outer: dict[str, float], slack: float = 1.0) -> bool:
    return (
        inner["left"] >= outer["left"] - slack
        and inner["right"] <= outer["right"] + slack
        and inner["top"] >= outer["top"] - slack
        and inner["bottom"] <= outer["bottom"] + slack
    )


def tick_span(ticks: list[str]) -> timedelta:
    """Time between the first and the last tick of a time axis (ticks within one day)."""
    times = [datetime.strptime(tick, "%H:%M:%S" if tick.count(":") == 2 else "%H:%M") for tick in ticks]
    return max(times) - min(times)


def check_layout(geometry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Dashboard-like layout: nothing overflows or overlaps, legends beside plots, time across, a unit on every
    y-axis with plain ticks, titles once, an empty section one line, no table row twice."""
    assert geometry["scrollWidth"] <= geometry["viewport"], "the page scrolls sideways"
    panels = geometry["panels"]
    for above, below in itertools.pairwise(panels):
        assert above["box"]["bottom"] <= below["box"]["top"] + 0.5, f"{above['title']} overlaps {below['title']}"
    by_title = {}
    for panel in panels:
        title = panel["title"]
        by_title[title] = panel
        assert geometry["text"].count(title) == 1, f"{title!r} is printed more than once"
        assert title not in panel["svgTexts"], f"{title!r} is repeated inside its chart"
        if panel["empty"]:
            height = panel["box"]["bottom"] - panel["box"]["top"]
            line = panel["titleBox"]["bottom"] - panel["titleBox"]["top"]
            assert height < 2.5 * line, f"{title}: an empty section takes {height:.0f} px, not one line"
            assert panel["text"].count("\n") == 0, f"{title}: an empty section is not one line: {panel['text']!r}"
            assert "in the window" in panel["text"], f"{title}: an empty section does not say so: {panel['text']!r}"
            continue
        assert len({tuple(row) for row in panel["table"]}) == len(panel["table"]), f"{title}: a row is repeated"
        if panel["svg"] is None:
            continue
        assert inside(panel["svg"], panel["box"]), f"{title}: the chart spills out of its panel"
        assert panel["xTicks"], f"{title}: the x-axis has no ticks"
        assert all(TIME_TICK.match(tick) for tick in panel["xTicks"]), f"{title}: x is not time: {panel['xTicks']}"
        assert any(text.startswith("time (") for text in panel["svgTexts"]), f"{title}: the time axis has no label"
        assert Y_UNIT.search(panel["yLabel"] or ""), f"{title}: no unit on y: {panel['yLabel']!r}"
        ticks = [tick for tick in panel["yTicks"] if tick]
        assert ticks, f"{title}: the y-axis has no tick labels"
        assert all(PLAIN_NUMBER.match(tick) for tick in ticks), f"{title}: y ticks are not plain numbers: {ticks}"
        if panel["legend"] is not None:
            assert inside(panel["legend"], panel["svg"]), f"{title}: the legend spills out of the chart"
            assert panel["legend"]["left"] >= panel["plot"]["right"] - 1, f"{title}: the legend covers the data"
            colours = panel["legendColours"]
            assert len(set(colours)) == len(colours), f"{title}: legend colours repeat: {colours}"
    plot_edges = {(panel["plot"]["left"], panel["plot"]["right"]) for panel in panels if panel["plot"]}
    assert len(plot_edges) <= 1, f"the charts' time axes do not line up: {plot_edges}"
    return by_title


def check_sessions(panel: dict[str, Any], span_file: Path) -> None:
    """The slowest file sessions: each names its trace, runs of one operation are one row, the caption names
    the command that shows a trace, and every bar stays in its lane."""
    assert f"interposer traces {span_file} --trace ID" in panel["caption"], panel["caption"]
    assert panel["waterfalls"], "no file session drawn"
    for session in panel["waterfalls"]:
        assert TRACE_ID.search(session["heading"]), session["heading"]
        assert session["bars"]
        assert all(inside(item["bar"], item["lane"], slack=0.5) for item in session["bars"])
        kinds = [re.sub(r" x\d+", "", re.sub(r" [\d.]+ \S+( total)?", "", row)) for row in session["rows"]]
        for first, second in itertools.pairwise(kinds):
            assert first != second, f"two rows of the same operation in a row, not collapsed: {session['rows']}"
        assert not any(row.startswith(("forget", "getxattr")) for row in session["rows"]), session["rows"]


def check_bytes_table(panel: dict[str, Any]) -> None:
    header, *rows = panel["table"]
    assert header == ["path", "read", "written"], header
    assert rows
    assert len({row[0] for row in rows}) == len(rows), "a path is listed twice"
