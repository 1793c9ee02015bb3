"""The rule groups: recording rules for the rates and quantiles, and the alerts built on them."""

from __future__ import annotations

from typing import Any

from interposer.names import (
    ATTR_ERROR_TYPE,
    ATTR_FAULT,
    ATTR_OPERATION,
    ATTR_THROTTLE_LIMIT,
    FAULTS_INJECTED,
    OPERATION_DURATION,
    RESOURCE_LABELS,
    SPANS_DROPPED,
    THROTTLE_WAIT,
    expected_failures_text,
    prometheus_label,
    unexpected_failure_matchers,
)

from .config import AlertConfig

OPERATION = OPERATION_DURATION.label(ATTR_OPERATION)
ERROR_TYPE = OPERATION_DURATION.label(ATTR_ERROR_TYPE)
LIMIT = THROTTLE_WAIT.label(ATTR_THROTTLE_LIMIT)
FAULT_TYPE = FAULTS_INJECTED.label(ATTR_FAULT)
WHERE = ", ".join(prometheus_label(attribute) for attribute in RESOURCE_LABELS)
"""Labels every rule keeps, so an alert says which mount is in trouble."""

REQUESTS = "cnfs:fuse_requests:rate"
FAILURES = "cnfs:fuse_failures:rate"
ERROR_RATIO = "cnfs:fuse_failures:ratio"
LATENCY_P99 = "cnfs:fuse_operation_duration_seconds:p99"
THROTTLE_WAITED = "cnfs:fuse_throttle_wait_seconds:rate"
"""Recording rule names (level:metric:operations, the Prometheus convention)."""


def _matchers(config: AlertConfig, *extra: str) -> str:
    return "{" + ", ".join(part for part in (config.selector, *extra) if part) + "}"


def recording_rules(config: AlertConfig) -> dict[str, Any]:
    window = config.rate_window
    count = OPERATION_DURATION.series("count")
    benign = "|".join(config.benign_errnos)
    failed = _matchers(config, f'{ERROR_TYPE}!=""')
    organic = " or ".join(FAILURES + selector for selector in unexpected_failure_matchers(f'{ERROR_TYPE}!~"{benign}"'))
    return {
        "name": "cnfs-interposer.rules",
        "rules": [
            {
                "record": REQUESTS,
                "expr": f"sum by ({WHERE}, {OPERATION}) (rate({count}{_matchers(config)}[{window}]))",
            },
            {
                "record": FAILURES,
                "expr": f"sum by ({WHERE}, {OPERATION}, {ERROR_TYPE}) (rate({count}{failed}[{window}]))",
            },
            {
                "record": ERROR_RATIO,
                "expr": f"sum by ({WHERE}, {OPERATION}) ({organic}) / on ({WHERE}, {OPERATION}) {REQUESTS}",
            },
            {
                "record": LATENCY_P99,
                "expr": f"histogram_quantile(0.99, sum by ({WHERE}, {OPERATION}, le) "
                f"(rate({OPERATION_DURATION.series('bucket')}{_matchers(config)}[{window}])))",
            },
            {
                "record": THROTTLE_WAITED,
                "expr": f"sum by ({WHERE}, {LIMIT}) (rate({THROTTLE_WAIT.series('sum')}{_matchers(config)}[{window}]))",
            },
        ],
    }


def _alert(
    config: AlertConfig, name: str, expr: str, duration: str, severity: str, summary: str, description: str
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{config.runbook_url}#{name.lower()}",
        },
    }


def alerting_rules(config: AlertConfig) -> dict[str, Any]:
    window = config.rate_window
    mount = (
        "{{ if $labels.k8s_pod_name }}{{ $labels.k8s_namespace_name }}/{{ $labels.k8s_pod_name }}:{{ end }}"
        "{{ $labels.fuse_mountpoint }}"
    )
    count = OPERATION_DURATION.series("count")
    injected_errnos = _matchers(config, f'{FAULT_TYPE}="errno"')
    return {
        "name": "cnfs-interposer.alerts",
        "rules": [
            _alert(
                config,
                "CnfsInterposerDown",
                f"up{_matchers(config, config.job_selector)} == 0",
                config.down_for,
                "critical",
                "An interposer scrape target is down.",
                "Prometheus cannot scrape {{ $labels.instance }} (job {{ $labels.job }}): its mount may be gone "
                "or its metrics endpoint unreachable.",
            ),
            _alert(
                config,
                "CnfsInterposerSilent",
                f"up{_matchers(config, config.volume_job_selector)} == 1 "
                f"unless on (job, instance) count by (job, instance) ({count}{_matchers(config)})",
                config.silent_for,
                "warning",
                "An interposer target exports no request metrics.",
                "{{ $labels.instance }} answers scrapes but has exported no FUSE request metrics: the metrics "
                "layer may be disabled, or the target is not an interposer.",
            ),
            _alert(
                config,
                "CnfsInterposerHighErrorRatio",
                f"{ERROR_RATIO} > {config.error_ratio}",
                config.error_ratio_for,
                "warning",
                "Many {{ $labels.fuse_operation_name }} requests fail.",
                f"{{{{ $value | humanizePercentage }}}} of {{{{ $labels.fuse_operation_name }}}} requests on {mount} "
                f"failed over {window} (benign errnos {', '.join(config.benign_errnos)} and expected answers "
                f"{expected_failures_text()} not counted).",
            ),
            _alert(
                config,
                "CnfsInterposerOrganicEIO",
                f'sum by ({WHERE}, {OPERATION}) ({FAILURES}{{{ERROR_TYPE}="EIO"}}) > 0 '
                f"unless on ({WHERE}, {OPERATION}) "
                f"sum by ({WHERE}, {OPERATION}) (rate({FAULTS_INJECTED.series()}{injected_errnos}[{window}])) > 0",
                config.eio_for,
                "critical",
                "The storage under {{ $labels.fuse_mountpoint }} returns EIO.",
                f"{{{{ $labels.fuse_operation_name }}}} requests on {mount} fail with EIO while no fault rule "
                "injects errors there: the backing storage reports I/O errors.",
            ),
            _alert(
                config,
                "CnfsInterposerSlowRequests",
                f"{LATENCY_P99} > {config.latency_p99_seconds}",
                config.latency_for,
                "warning",
                "{{ $labels.fuse_operation_name }} requests are slow.",
                f"The p99 of {{{{ $labels.fuse_operation_name }}}} on {mount} is {{{{ $value | humanizeDuration }}}} "
                f"(threshold {config.latency_p99_seconds} s).",
            ),
            _alert(
                config,
                "CnfsInterposerThrottleSaturated",
                f"{THROTTLE_WAITED} > {config.throttle_saturation}",
                config.throttle_for,
                "warning",
                "Requests keep waiting for the {{ $labels.fuse_throttle_limit }} limit.",
                f'Requests on {mount} waited {{{{ printf "%.2f" $value }}}} s per second for the '
                "{{ $labels.fuse_throttle_limit }} limit: the workload runs at the cap.",
            ),
            _alert(
                config,
                "CnfsInterposerFaultInjectionActive",
                f"sum by ({WHERE}) (rate({FAULTS_INJECTED.series()}{_matchers(config)}[{window}])) > 0",
                "0m",
                "info",
                "Fault injection is active on {{ $labels.fuse_mountpoint }}.",
                f"Fault rules on {mount} are injecting faults: errors and latency there are deliberate.",
            ),
            _alert(
                config,
                "CnfsInterposerDroppingSpans",
                f"sum by ({WHERE}) (rate({SPANS_DROPPED.series()}{_matchers(config)}[{window}])) > 0",
                config.dropped_spans_for,
                "warning",
                "An interposer drops spans.",
                f"The span export queue of {mount} overflows: the collector is slow or unreachable, and traces "
                "are incomplete.",
            ),
        ],
    }


def rule_groups(config: AlertConfig) -> dict[str, Any]:
    """A Prometheus rule file: the recording group first, then the alerts."""
    return {"groups": [recording_rules(config), alerting_rules(config)]}


def prometheus_rule(config: AlertConfig) -> dict[str, Any]:
    """The same groups as a PrometheusRule resource, which kube-prometheus-stack loads by its labels."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "cnfs-interposer",
            "labels": {"app.kubernetes.io/name": "cnfs-interposer", **config.rule_labels},
        },
        "spec": rule_groups(config),
    }
