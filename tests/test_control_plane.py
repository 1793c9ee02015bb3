"""The tests' control plane (tests/kube.py) is the Kubernetes release the charts are deployed to.

It reports the version tools/gobuild.toml builds; every chart the project deploys accepts that version by its
kubeVersion (checked by helm itself); and it runs a Deployment's pods to Ready on a kwok node, so the
scheduler, the controllers and kwok all take part.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from .kube import ControlPlane, binary, kubernetes_version
from .test_kubernetes import CHART, HELMFILE, run

FACTS = HELMFILE / "reference" / "upstream-facts.yaml"


def kube_versions() -> dict[str, str]:
    """Every deployed chart's kubeVersion constraint: this project's chart and the pinned upstream ones."""
    upstream = yaml.safe_load(FACTS.read_text())["charts"]
    constraints = {name: chart["kube_version"] for name, chart in upstream.items()}
    return {CHART.name: yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"], **constraints}


def test_the_server_reports_the_release_it_was_built_at(cluster: ControlPlane) -> None:
    version = json.loads(cluster.kubectl("version", "--output=json").stdout)
    assert version["serverVersion"]["gitVersion"] == kubernetes_version()
    assert version["clientVersion"]["gitVersion"] == kubernetes_version()
    major, minor, _ = kubernetes_version().removeprefix("v").split(".")
    assert (version["serverVersion"]["major"], version["serverVersion"]["minor"]) == (major, minor)


@pytest.mark.parametrize("chart", sorted(kube_versions()))
def test_each_chart_accepts_the_release(chart: str, tmp_path: Path) -> None:
    """helm's own check of Chart.yaml's kubeVersion, on a chart that has only that constraint."""
    constraint = kube_versions()[chart]
    (tmp_path / "templates").mkdir()
    meta = {
        "apiVersion": "v2",
        "name": "probe",
        "version": "0.0.0",
        **({"kubeVersion": constraint} if constraint else {}),
    }
    (tmp_path / "Chart.yaml").write_text(yaml.safe_dump(meta))
    helm = str(binary("helm"))
    run(helm, "template", "probe", str(tmp_path), "--kube-version", kubernetes_version())
    below = run(helm, "template", "probe", str(tmp_path), "--kube-version", "v1.0.0", expect_ok=False)
    assert not constraint or "kubeVersion" in below.stderr, "helm did not check the constraint"


def test_a_deployment_becomes_ready_on_a_kwok_node(cluster: ControlPlane) -> None:
    cluster.add_node("kwok-node-0")
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "probe", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "probe"}},
            "template": {
                "metadata": {"labels": {"app": "probe"}},
                "spec": {"containers": [{"name": "probe", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(deployment))
    cluster.kubectl("rollout", "status", "deployment/probe", "-n", "default", "--timeout=120s")
    pods = cluster.get("pods", "-n", "default", "-l", "app=probe")["items"]
    assert {pod["spec"]["nodeName"] for pod in pods} == {"kwok-node-0"}
    cluster.kubectl("delete", "deployment/probe", "-n", "default")
