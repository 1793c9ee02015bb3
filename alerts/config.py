"""Thresholds and selectors of the rules: one block, overridable, in the style of the monitoring mixins.

``python -m alerts --config overrides.yaml`` merges a YAML mapping of these
fields over the defaults; a bad field is an error naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, StringConstraints, ValidationError

from interposer.config import ConfigError, read_config_file
from interposer.section import Section

PROMETHEUS_DURATION = r"^((([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?|0)$"
"""What Prometheus accepts as a duration in a rule's ``for`` and a range selector (prometheus/common
model.ParseDuration); tests/test_dashboards.py holds it to what promtool accepts and refuses."""

Duration = Annotated[str, StringConstraints(min_length=1, pattern=PROMETHEUS_DURATION)]


class AlertConfig(Section):
    """What the rules select and when they fire."""

    selector: str = Field("", description="Extra label matchers for every interposer series, e.g. 'cluster=\"prod\"'.")
    job_selector: str = Field('job=~".*interposer.*"', description="Matchers of the scrape job(s) of the interposers.")
    volume_job_selector: str = Field(
        'job=~".*interposer.*", job!~".*interposer-node"',
        description="Matchers of the jobs whose targets serve volumes (the chart's volume-server pods, local mounts): "
        "the ones that must export request metrics, unlike the CSI node plugins, which export their calls only.",
    )
    benign_errnos: tuple[str, ...] = Field(
        ("ENOENT", "ENODATA", "EEXIST", "ENOTEMPTY", "EAGAIN"),
        description="Errnos that are normal answers (a lookup of a missing name), not trouble.",
    )
    error_ratio: float = Field(0.05, gt=0, le=1, description="Share of non-benign failures per operation that alerts.")
    error_ratio_for: Duration = Field("10m", description="How long the error ratio must hold.")
    eio_for: Duration = Field("1m", description="How long organic EIO must go on.")
    latency_p99_seconds: float = Field(0.5, gt=0, description="p99 request latency that alerts.")
    latency_for: Duration = Field("15m")
    throttle_saturation: float = Field(
        0.5, gt=0, description="Seconds waited per second for one limit (0.5: half the time a request is waiting)."
    )
    throttle_for: Duration = Field("15m")
    silent_for: Duration = Field("15m", description="How long an interposer may export no requests at all.")
    down_for: Duration = Field("5m")
    dropped_spans_for: Duration = Field("10m")
    rate_window: Duration = Field("5m", description="Window of the rates the rules compute.")
    runbook_url: str = Field(
        "https://github.com/cnfs-interposer/cnfs-interposer/blob/main/docs/runbooks.md",
        description="The runbook page; each alert links to its own section.",
    )
    rule_labels: dict[str, str] = Field(
        default_factory=lambda: {"release": "kube-prometheus-stack"},
        description="Labels of the PrometheusRule, which kube-prometheus-stack selects rules by.",
    )


def load(path: Path | None) -> AlertConfig:
    """The defaults with the overrides in ``path``; errors name the file, each bad field and what is allowed."""
    raw = {} if path is None else read_config_file(path)
    try:
        return AlertConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid alert overrides in {path}:\n  " + "\n  ".join(_describe(exc))) from None


def _describe(error: ValidationError) -> list[str]:
    """One line per bad field, with the alert fields (not the interposer's) where a key is unknown."""
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            message = f"unknown field; allowed fields: {', '.join(AlertConfig.model_fields)}"
        elif item["type"] in ("string_pattern_mismatch", "string_too_short"):
            message = (
                f"{item['input']!r} is not a Prometheus duration; allowed: a number with a unit, e.g. 30s, 10m, 1h30m"
            )
        else:
            message = item["msg"]
        lines.append(f"{field}: {message}")
    return lines
