"""What every dashboard shares: the template variables, the series selector, and panel builders.

Metric and label names come from ``interposer.names``, so a dashboard
queries exactly what Prometheus stores (a test runs every query against a
real Prometheus).  grafanalib builds the panels; ``to_json`` drops the
legacy null fields it emits, so the JSON matches Grafana's current dashboard
model (``@grafana/schema``, checked with ``tsc``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attr
from grafanalib import core
from grafanalib._gen import DashboardEncoder

from interposer.names import (
    ATTR_OPERATION,
    RESOURCE_K8S_NAMESPACE,
    RESOURCE_K8S_POD,
    RESOURCE_VOLUME_ID,
    SERVICE_NAME_DEFAULT,
    SPAN_PREFIX,
    prometheus_label,
    unexpected_failure_matchers,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
"""Every panel and query uses the data source the user picks in the datasource variable."""

OPERATION = prometheus_label(ATTR_OPERATION)
NAMESPACE = prometheus_label(RESOURCE_K8S_NAMESPACE)
POD = prometheus_label(RESOURCE_K8S_POD)
VOLUME = prometheus_label(RESOURCE_VOLUME_ID)

VARIABLES = {"namespace": NAMESPACE, "pod": POD, "volume": VOLUME, "operation": OPERATION}
"""Template variable -> the label it filters on."""
RATE_WINDOW = "$__rate_interval"
JAEGER_BROWSER_URL = "http://localhost:16686"
"""Jaeger's UI as the user's browser reaches it, through the port-forward docs/kubernetes.md gives: the links open
in the browser, which cannot resolve the cluster's Service names (Grafana's datasource URL is another matter, as
Grafana's server resolves it).  A textbox, so a user with an Ingress types its address once."""
TRACE_SEARCH_LINK = {
    "title": "Traces of this operation in Jaeger",
    "url": "${jaeger}/search?service="
    + SERVICE_NAME_DEFAULT
    + "&operation="
    + SPAN_PREFIX
    + "${__field.labels."
    + OPERATION
    + "}",
    "targetBlank": True,
}
"""A data link from a per-operation series to the Jaeger search for that operation's spans."""


def _variable_matchers(operation: bool = True) -> list[str]:
    return [f'{label}=~"${variable}"' for variable, label in VARIABLES.items() if operation or variable != "operation"]


def selector(*extra: str, operation: bool = True) -> str:
    """The label matchers of the dashboard's variables, and ``extra`` ones; ``operation`` False for
    series that have no operation label."""
    return "{" + ", ".join([*_variable_matchers(operation), *extra]) + "}"


def unexpected_failures(series: str) -> str:
    """The rates of ``series``'s failed requests but the expected answers (names.EXPECTED_FAILURES: a lookup's
    ENOENT, the getxattr ENODATA probe before each write), for the dashboard's variables: disjoint series, so a
    sum over them counts each such failure once."""
    return " or ".join(
        f"rate({series}{matchers}[{RATE_WINDOW}])" for matchers in unexpected_failure_matchers(*_variable_matchers())
    )


@attr.s
class Target(core.Target):
    """A Prometheus query; ``exemplar`` asks Grafana to show exemplars (trace links) with it."""

    exemplar: bool = attr.ib(default=False)

    def to_json_data(self) -> dict[str, Any]:
        data: dict[str, Any] = super().to_json_data()
        data["exemplar"] = self.exemplar
        data["datasource"] = DATASOURCE
        return data


def targets(*queries: tuple[str, str], exemplar: bool = False, heatmap: bool = False) -> list[Target]:
    """Targets from (PromQL, legend) pairs, with refIds A, B, …"""
    return [
        Target(
            expr=expr,
            legendFormat=legend,
            refId=chr(ord("A") + index),
            exemplar=exemplar,
            format="heatmap" if heatmap else "time_series",
        )
        for index, (expr, legend) in enumerate(queries)
    ]


def template_variables() -> core.Templating:
    """Data source, namespace, pod, volume and operation (multi-select, All = any), and the Jaeger URL."""
    source = core.Template(name="datasource", label="Data source", type="datasource", query="prometheus", default="")
    filters = [
        core.Template(
            name=variable,
            label=variable.capitalize(),
            query=f"label_values({label})",
            dataSource=DATASOURCE,
            includeAll=True,
            multi=True,
            allValue=".*",
            default="All",
            refresh=2,
        )
        for variable, label in VARIABLES.items()
    ]
    jaeger = core.Template(
        name="jaeger", label="Jaeger UI", type="textbox", query=JAEGER_BROWSER_URL, default=JAEGER_BROWSER_URL
    )
    return core.Templating(list=[source, *filters, jaeger])


def prometheus_annotation(name: str, expr: str, title: str, text: str, tag_keys: Sequence[str]) -> dict[str, Any]:
    """An annotation query of the Prometheus data source: an event wherever ``expr`` is above zero.

    The fields are those Grafana's Prometheus annotation support reads (packages/grafana-prometheus/src/
    annotations.ts): the query in ``target``, and ``titleFormat``, ``textFormat`` and ``tagKeys`` (comma-separated
    label names) beside it, rendered with the series' labels like a legend."""
    return {
        "name": name,
        "datasource": DATASOURCE,
        "enable": True,
        "iconColor": "orange",
        "target": {"refId": "Annotations", "expr": expr},
        "titleFormat": title,
        "textFormat": text,
        "tagKeys": ",".join(tag_keys),
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: Sequence[core.Panel],
    annotations: Sequence[dict[str, Any]] = (),
) -> core.Dashboard:
    """A dashboard with the shared variables and a link to the others (they share the tag)."""
    return core.Dashboard(
        annotations=core.Annotations(list=list(annotations)),
        uid=uid,
        title=title,
        description=description,
        tags=["cnfs-interposer"],
        timezone="browser",
        refresh="30s",
        time=core.Time("now-1h", "now"),
        templating=template_variables(),
        links=[
            core.DashboardLink(
                title="cnfs-interposer",
                type="dashboards",
                tags=["cnfs-interposer"],
                asDropdown=True,
                includeVars=True,
                keepTime=True,
            )
        ],
        panels=list(panels),
    ).auto_panel_ids()


PANEL_FIELDS = frozenset(
    {
        "datasource",
        "description",
        "fieldConfig",
        "gridPos",
        "id",
        "interval",
        "links",
        "maxDataPoints",
        "options",
        "repeat",
        "repeatDirection",
        "targets",
        "timeFrom",
        "timeShift",
        "title",
        "transformations",
        "transparent",
        "type",
    }
)
"""The panel fields of Grafana's current dashboard model; grafanalib also emits legacy ones (span, editable, …)."""
VARIABLE_FIELDS = frozenset(
    {"allValue", "current", "datasource", "description", "hide", "includeAll", "label", "multi", "name", "options"}
    | {"query", "refresh", "regex", "skipUrlSync", "sort", "type"}
)
DASHBOARD_FIELDS = frozenset(
    {"annotations", "description", "editable", "graphTooltip", "id", "links", "panels", "refresh", "schemaVersion"}
    | {"tags", "templating", "time", "timepicker", "timezone", "title", "uid", "version"}
)


def _without_nulls(value: Any) -> Any:
    """Drop the null fields grafanalib fills in; a threshold step's ``value`` is null on purpose (the base)."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None or key == "value"}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _only(fields: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if key in allowed}


def to_json(board: core.Dashboard) -> str:
    """The dashboard as Grafana's current model: legacy panel fields and null placeholders removed."""
    raw = _without_nulls(json.loads(json.dumps(board.to_json_data(), cls=DashboardEncoder)))
    model = _only(raw, DASHBOARD_FIELDS)
    model["panels"] = [_only(panel, PANEL_FIELDS) for panel in raw["panels"]]
    model["templating"]["list"] = [_only(variable, VARIABLE_FIELDS) for variable in raw["templating"]["list"]]
    for variable in model["templating"]["list"]:
        variable.get("current", {}).pop("tags", None)
    model["timepicker"].pop("time_options", None)
    return json.dumps(model, indent=2, sort_keys=True) + "\n"
