"""Thresholds and selectors of the rules: one block, overridable, in the style of the monitoring mixins.

``python -m alerts --config overrides.yaml`` merges a YAML mapping of these
fields over the defaults; a bad field is an error naming it.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from interposer.config import ConfigError, describe_errors
from interposer.section import Section


class AlertConfig(Section):
    """What the rules select and when they fire."""

    selector: str = Field("", description="Extra label matchers for every interposer series, e.g. 'cluster=\"prod\"'.")
    job_selector: str = Field('job=~".*interposer.*"', description="Matchers of the scrape job(s) of the interposers.")
    benign_errnos: tuple[str, ...] = Field(
        ("ENOENT", "ENODATA", "EEXIST", "ENOTEMPTY", "EAGAIN"),
        description="Errnos that are normal answers (a lookup of a missing name), not trouble.",
    )
    error_ratio: float = Field(0.05, gt=0, le=1, description="Share of non-benign failures per operation that alerts.")
    error_ratio_for: str = Field("10m", description="How long the error ratio must hold.")
    eio_for: str = Field("1m", description="How long organic EIO must go on.")
    latency_p99_seconds: float = Field(0.5, gt=0, description="p99 request latency that alerts.")
    latency_for: str = Field("15m")
    throttle_saturation: float = Field(
        0.5, gt=0, description="Seconds waited per second for one limit (0.5: half the time a request is waiting)."
    )
    throttle_for: str = Field("15m")
    silent_for: str = Field("15m", description="How long an interposer may export no requests at all.")
    down_for: str = Field("5m")
    dropped_spans_for: str = Field("10m")
    rate_window: str = Field("5m", description="Window of the rates the rules compute.")
    runbook_url: str = Field(
        "https://github.com/cnfs-interposer/cnfs-interposer/blob/main/docs/runbooks.md",
        description="The runbook page; each alert links to its own section.",
    )
    rule_labels: dict[str, str] = Field(
        default_factory=lambda: {"release": "kube-prometheus-stack"},
        description="Labels of the PrometheusRule, which kube-prometheus-stack selects rules by.",
    )


def load(path: Path | None) -> AlertConfig:
    """The defaults, with the overrides in ``path`` applied."""
    raw = {} if path is None else yaml.safe_load(path.read_text()) or {}
    try:
        return AlertConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None
