"""The stack's programs, built here from their Go modules (tools/gobuild.toml), accept the configurations that
helmfile.d renders for them in each environment (helmfile.d/reference/rendered/, which tools/upstream_facts.py
generates from the real charts).  A component name a program does not have would stop it from starting in
the cluster; here it fails a test."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from .servers import built_program
from .test_kubernetes import ENVIRONMENTS, HELMFILE

RENDERED = HELMFILE / "reference" / "rendered"
COMPONENT_SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions")
POD_ENVIRONMENT = {
    "MY_POD_IP": "127.0.0.1",
    "OTEL_K8S_NODE_NAME": "node",
    "OTEL_K8S_NAMESPACE": "observability",
    "OTEL_K8S_NODE_IP": "127.0.0.1",
    "OTEL_K8S_POD_IP": "127.0.0.1",
    "OTEL_K8S_POD_NAME": "opentelemetry-collector",
}
"""The collector chart's Deployment sets these (the downward API); the rendered configuration reads them."""


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, env={**os.environ, **POD_ENVIRONMENT}
    )


def rendered(environment: str, name: str) -> Path:
    path = RENDERED / environment / name
    assert path.is_file(), f"{path}: regenerate with python -m tools.upstream_facts"
    return path


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_collector_validates_the_configuration_rendered_for_it(environment: str) -> None:
    otelcol = built_program("otelcol")
    result = run(otelcol, "validate", f"--config={rendered(environment, 'otelcol.yaml')}")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_jaeger_validates_the_configuration_rendered_for_it(environment: str) -> None:
    jaeger = built_program("jaeger")
    result = run(jaeger, "validate", f"--config={rendered(environment, 'jaeger.yaml')}")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_promtool_checks_the_rules_rendered_for_prometheus(environment: str) -> None:
    promtool = built_program("promtool")
    result = run(promtool, "check", "rules", str(rendered(environment, "rules.yaml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert yaml.safe_load(rendered(environment, "rules.yaml").read_text())["groups"], "no rules rendered"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_promtool_checks_the_scrape_jobs_derived_from_the_monitors(environment: str, tmp_path: Path) -> None:
    """The jobs prometheus-operator makes of the collector's ServiceMonitor and the interposer's PodMonitors, with
    the rules, are a configuration Prometheus accepts."""
    promtool = built_program("promtool")
    jobs = yaml.safe_load(rendered(environment, "scrape.yaml").read_text())["scrape_configs"]
    assert {job["job_name"].rsplit("/", 1)[0] for job in jobs} == {
        "serviceMonitor/observability/opentelemetry-collector",
        "podMonitor/observability/interposer-node",
        "podMonitor/observability/interposer-volume-servers",
    }
    config = tmp_path / "prometheus.yml"
    rules = str(rendered(environment, "rules.yaml"))
    config.write_text(yaml.safe_dump({"scrape_configs": jobs, "rule_files": [rules]}))
    result = run(promtool, "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_collector_has_exactly_the_components_the_configurations_use() -> None:
    """Its manifest (tools/gobuild_files/otelcol/manifest.yaml) lists what the rendered configurations use, no more."""
    otelcol = built_program("otelcol")
    result = run(otelcol, "components")
    assert result.returncode == 0, result.stderr
    components = yaml.safe_load(result.stdout)
    built = {section: {item["name"] for item in components.get(section) or []} for section in COMPONENT_SECTIONS}
    used: dict[str, set[str]] = {section: set() for section in COMPONENT_SECTIONS}
    for environment in ENVIRONMENTS:
        config = yaml.safe_load(rendered(environment, "otelcol.yaml").read_text())
        for section in COMPONENT_SECTIONS:
            used[section] |= {name.split("/")[0] for name in config.get(section) or {}}
    assert built == used
