"""Faults and throttling: what the interposer injected, against what the storage did on its own."""

from __future__ import annotations

from grafanalib import core

from interposer.csi.metrics import LIVE_CONTROL_ACTION, LIVE_CONTROL_CHANGES_TOTAL, LIVE_CONTROL_RESULT
from interposer.names import (
    ATTR_FAULT,
    ATTR_THROTTLE_LIMIT,
    FAULTS_INJECTED,
    OPERATION_DURATION,
    THROTTLE_WAIT,
    expected_failures_text,
)

from .common import OPERATION, RATE_WINDOW, dashboard, prometheus_annotation, selector, targets, unexpected_failures
from .panels import grid, timeseries

FAULT_TYPE = FAULTS_INJECTED.label(ATTR_FAULT)
LIMIT = THROTTLE_WAIT.label(ATTR_THROTTLE_LIMIT)
LIVE_CONTROL_CHANGES = prometheus_annotation(
    "VolumeExperiments",
    f"sum by ({LIVE_CONTROL_ACTION}, {LIVE_CONTROL_RESULT}) "
    f"(increase({LIVE_CONTROL_CHANGES_TOTAL}[{RATE_WINDOW}])) > 0",
    f"VolumeExperiment {{{{{LIVE_CONTROL_ACTION}}}}}",
    f"{{{{{LIVE_CONTROL_ACTION}}}}} of a VolumeExperiment's sections on volumes: {{{{{LIVE_CONTROL_RESULT}}}}} "
    "(kubectl get events --field-selector involvedObject.kind=VolumeExperiment says which)",
    (LIVE_CONTROL_ACTION, LIVE_CONTROL_RESULT),
)
"""Marks where the node plugins applied or reverted a VolumeExperiment (live control, docs/faults.md)."""


def build() -> core.Dashboard:
    errno_faults = selector(f'{FAULT_TYPE}="errno"')
    injected_errors = f"sum(rate({FAULTS_INJECTED.series()}{errno_faults}[{RATE_WINDOW}]))"
    all_errors = f"sum({unexpected_failures(OPERATION_DURATION.series('count'))})"
    waits = selector(operation=False)
    return dashboard(
        "cnfs-faults",
        "cnfs-interposer / Faults and throttling",
        "Injected faults by type and operation, injected against organic errors, and throttle waits.",
        [
            timeseries(
                "Injected faults/s",
                "Faults the fault rules injected, by type and operation.",
                targets(
                    (
                        f"sum by ({FAULT_TYPE}, {OPERATION}) "
                        f"(rate({FAULTS_INJECTED.series()}{selector()}[{RATE_WINDOW}]))",
                        f"{{{{{FAULT_TYPE}}}}} {{{{{OPERATION}}}}}",
                    )
                ),
                "ops",
                grid(0, 0, 12, 9),
                stacked=True,
            ),
            timeseries(
                "Injected and organic errors/s",
                "Failed requests split into those a fault rule caused and those the storage returned itself "
                f"(at least zero), expected answers ({expected_failures_text()}) left out.",
                targets(
                    (f"{injected_errors} or vector(0)", "injected"),
                    (f"clamp_min({all_errors} - ({injected_errors} or vector(0)), 0)", "organic"),
                ),
                "ops",
                grid(12, 0, 12, 9),
                stacked=True,
            ),
            timeseries(
                "Throttle wait (seconds waited per second)",
                "Time requests spent waiting for each limit, per second of wall time: 1 means one request "
                "was always waiting.",
                targets(
                    (
                        f"sum by ({LIMIT}) (rate({THROTTLE_WAIT.series('sum')}{waits}[{RATE_WINDOW}]))",
                        f"{{{{{LIMIT}}}}}",
                    )
                ),
                "s",
                grid(0, 9, 12, 9),
            ),
            timeseries(
                "Throttle wait p99",
                "99th percentile of a throttled request's wait, by limit.",
                targets(
                    (
                        f"histogram_quantile(0.99, sum by (le, {LIMIT}) "
                        f"(rate({THROTTLE_WAIT.series('bucket')}{waits}[{RATE_WINDOW}])))",
                        f"{{{{{LIMIT}}}}}",
                    )
                ),
                "s",
                grid(12, 9, 12, 9),
            ),
        ],
        annotations=[LIVE_CONTROL_CHANGES],
    )
