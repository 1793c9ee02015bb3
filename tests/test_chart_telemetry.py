"""What the chart's telemetry values make of the interposers it runs: read through the interposer's own functions
from the environment the rendered chart gives the node plugin and each volume's server pod, so a value that the
code ignores, or a metrics path the PodMonitor cannot scrape, fails here."""

from __future__ import annotations

import os
from typing import Any

import pytest

from interposer.config import MetricsConfig, TracingConfig
from interposer.csi.pods import server_pod
from interposer.telemetry.metrics_setup import exporter_names
from interposer.telemetry.tracing_setup import sample_ratio

from .test_csi_pods import settings_of, spec
from .test_kubernetes import by_kind, helm, render

__all__ = ["helm"]  # the fixture, shared with test_kubernetes


def server_container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The container of a volume's server pod as the node plugin makes it from the rendered settings."""
    pod = server_pod(spec("/var/lib/cnfs-interposer/volumes/v"), settings_of(manifests), "node-a")
    containers: list[dict[str, Any]] = pod["spec"]["containers"]
    [container] = containers
    return container


def server_environment(manifests: list[dict[str, Any]]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in server_container(manifests)["env"]}


def plugin_environment(manifests: list[dict[str, Any]]) -> dict[str, str]:
    """The literal environment of the node plugin's container (the one that runs the interposer)."""
    [daemonset] = by_kind(manifests, "DaemonSet")
    [plugin] = [
        c for c in daemonset["spec"]["template"]["spec"]["containers"] if "OTEL_EXPORTER_OTLP_ENDPOINT" in str(c)
    ]
    return {item["name"]: item["value"] for item in plugin["env"] if "value" in item}


def applied(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]) -> None:
    """This process's OTEL_* variables replaced by the pod's."""
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)


def test_a_volume_servers_metrics_take_one_path_the_pod_monitors_scrape(
    helm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the chart's OTLP endpoint set, the server must still serve its Prometheus endpoint (else every
    volume's target is down: CnfsInterposerDown, critical, on a healthy stack) and must not push metrics over
    OTLP as well (every series twice, and the dropped-span counter lost with the collector it reports on)."""
    manifests = render(helm)
    environment = server_environment(manifests)
    assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"]
    applied(monkeypatch, environment)
    assert exporter_names(MetricsConfig()) == ("prometheus",)
    [monitor] = [m for m in by_kind(manifests, "PodMonitor") if m["metadata"]["name"].endswith("-volume-servers")]
    [port] = server_container(manifests)["ports"]
    assert [endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]] == [port["name"]]
    assert environment["OTEL_EXPORTER_PROMETHEUS_PORT"] == str(port["containerPort"])


@pytest.mark.parametrize("ratio", ["0.25", "1"])
def test_the_trace_sample_ratio_value_is_the_ratio_the_interposers_sample_at(
    helm: str, monkeypatch: pytest.MonkeyPatch, ratio: str
) -> None:
    manifests = render(helm, "--set-string", f"telemetry.tracesSampleRatio={ratio}")
    for environment in (server_environment(manifests), plugin_environment(manifests)):
        applied(monkeypatch, environment)
        assert sample_ratio(TracingConfig()) == float(ratio)
