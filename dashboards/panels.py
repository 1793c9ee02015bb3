"""Panel builders with the units and layouts the dashboards share."""

from __future__ import annotations

from typing import Any

from grafanalib import core

from .common import DATASOURCE, Target


def grid(x: int, y: int, w: int, h: int) -> core.GridPos:
    return core.GridPos(h=h, w=w, x=x, y=y)


def stat(title: str, description: str, query: list[Target], unit: str, position: core.GridPos) -> core.Stat:
    return core.Stat(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=query,
        format=unit,
        reduceCalc="lastNotNull",
        graphMode="area",
        gridPos=position,
        thresholds=[{"color": "green", "value": None}],
    )


def timeseries(
    title: str,
    description: str,
    query: list[Target],
    unit: str,
    position: core.GridPos,
    *,
    overrides: list[dict[str, Any]] | None = None,
    links: list[dict[str, Any]] | None = None,
    stacked: bool = False,
) -> core.TimeSeries:
    extra: dict[str, Any] = {}
    if links:
        extra = {"fieldConfig": {"defaults": {"links": links}}}
    return core.TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=query,
        unit=unit,
        gridPos=position,
        fillOpacity=10,
        legendDisplayMode="table",
        legendPlacement="right",
        legendCalcs=["mean", "max", "lastNotNull"],
        tooltipMode="multi",
        stacking={"mode": "normal"} if stacked else {},
        overrides=overrides or [],
        extraJson=extra or None,
    )


def mirrored(series: str) -> dict[str, Any]:
    """An override drawing the named series below zero (reads under writes)."""
    return {
        "matcher": {"id": "byName", "options": series},
        "properties": [{"id": "custom.transform", "value": "negative-Y"}],
    }


def heatmap(title: str, description: str, query: list[Target], position: core.GridPos) -> core.Panel:
    """Grafana's heatmap panel over histogram buckets (Prometheus 'heatmap' format), y axis in seconds."""
    return core.Heatmap(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=query,
        gridPos=position,
        dataFormat="tsbuckets",
        hideZeroBuckets=True,
        extraJson={
            "fieldConfig": {"defaults": {}, "overrides": []},
            "options": {
                "calculate": False,
                "yAxis": {"unit": "s"},
                "cellGap": 1,
                "color": {"mode": "scheme", "scheme": "Oranges", "exponent": 0.5},
                "exemplars": {"color": "rgba(255,0,255,0.7)"},
                "tooltip": {"show": True, "yHistogram": True},
            },
        },
    )
