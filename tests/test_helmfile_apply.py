"""``helmfile apply``, ``diff``, ``sync`` and ``destroy`` of the project's release, for real, against the real API
server of tests/kube.py, with helm, the helm-diff plugin and helmfile built here (tools/gobuild.toml).

The upstream releases (kube-prometheus-stack, Jaeger, the collector, Grafana) are left out: no chart repository is
reachable from this machine or CI.  What the interposer's release needs of them is there for real: the
monitoring.coreos.com CRDs of the prometheus-operator release kube-prometheus-stack deploys, from that operator's
own Go module (``prometheus-operator-crds`` in tools/gobuild.toml).  helmfile runs with ``--selector
name=interposer``; everything else is the helmfile users run, in each environment.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.gobuild import HELM_PLUGINS, TOOLS, load

from .kube import ControlPlane, binary

ROOT = Path(__file__).resolve().parent.parent
HELMFILE = ROOT / "helmfile.d"
WALK_THROUGH = ROOT / "docs" / "kubernetes.md"
FACTS = HELMFILE / "reference" / "upstream-facts.yaml"
RELEASE = "interposer"
INSTANCE_LABEL = f"app.kubernetes.io/instance={RELEASE}"
KEPT_BY_HELM = {"customresourcedefinition.apiextensions.k8s.io/volumeexperiments.cnfs-interposer.io"}
"""What helm documents that it keeps on uninstall: the CRDs of a chart's crds/ folder (helm.sh/docs, "Custom
Resource Definitions": "CRDs are never deleted")."""


def namespace_of(environment: str) -> str:
    values = yaml.safe_load((HELMFILE / "environments" / f"{environment}.yaml").read_text())
    namespace: str = values["namespace"]
    return namespace


def test_the_crds_are_those_of_the_operator_the_chart_deploys() -> None:
    """The CRDs installed before the release come from the operator version kube-prometheus-stack runs."""
    crds = load()["prometheus-operator-crds"]
    facts = yaml.safe_load(FACTS.read_text())
    images = {image for environment in facts["environments"].values() for image in environment["images"]}
    operator = {image for image in images if image.startswith("quay.io/prometheus-operator/prometheus-operator:")}
    assert operator == {f"quay.io/prometheus-operator/prometheus-operator:{crds.version}"}


class Helmfile:
    """helmfile in one environment against the test's API server, with helm's state in a folder of its own."""

    def __init__(self, cluster: ControlPlane, environment: str, home: Path) -> None:
        self.cluster = cluster
        self.environment = environment
        self.namespace = namespace_of(environment)
        self.env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "PATH": f"{binary('helm').parent}{os.pathsep}{os.environ['PATH']}",
            "HELM_PLUGINS": str(HELM_PLUGINS),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(self, *arguments: str, codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        command = [str(binary("helmfile")), "--file", str(HELMFILE), "--environment", self.environment]
        command += [*arguments, "--selector", f"name={RELEASE}", "--skip-deps"]
        result = subprocess.run(
            command, capture_output=True, text=True, cwd=HELMFILE, env=self.env, timeout=300, check=False
        )
        assert result.returncode in codes, f"helmfile {' '.join(arguments)}: exit {result.returncode}\n" + (
            result.stdout + result.stderr
        )
        return result

    def releases(self) -> list[dict[str, Any]]:
        """``helm list`` of every release in the namespace, whatever its state (Helm 4 has no --all)."""
        states = ["--deployed", "--failed", "--pending", "--superseded", "--uninstalled", "--uninstalling"]
        command = [str(binary("helm")), "list", *states, "--namespace", self.namespace, "--output", "json"]
        result = subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=60, check=False)
        assert result.returncode == 0, f"helm list: {result.stderr}"
        releases: list[dict[str, Any]] = json.loads(result.stdout)
        return releases


@pytest.fixture
def helmfile(cluster: ControlPlane, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Helmfile]:
    """The API server as kube-prometheus-stack leaves it (its CRDs), a kwok node, and helmfile for it."""
    binary("helm-diff")
    binary("prometheus-operator-crds")
    for target in load()["prometheus-operator-crds"].module_files:
        cluster.kubectl("apply", "--server-side", "--field-manager=interposer-tests", "-f", str(TOOLS / target))
    cluster.add_node("helmfile-node")
    runner = Helmfile(cluster, request.param, tmp_path)
    yield runner
    if runner.releases():
        runner.run("destroy")


def objects_of_the_release(cluster: ControlPlane) -> set[str]:
    """Every object of every listable kind, in every namespace and none, that carries the release's label."""
    kinds = cluster.kubectl("api-resources", "--verbs=list", "--output=name").stdout.split()
    listed = cluster.kubectl("get", ",".join(kinds), "--all-namespaces", "--selector", INSTANCE_LABEL, "-o", "name")
    return set(listed.stdout.split())


@pytest.mark.parametrize("helmfile", ["default", "production"], indirect=True)
def test_apply_installs_then_changes_nothing_sync_upgrades_and_destroy_leaves_only_the_crd(
    helmfile: Helmfile, cluster: ControlPlane
) -> None:
    # The documented first apply on an empty cluster (docs/kubernetes.md): a server-side diff of a release whose
    # custom resources' CRDs another release installs cannot render before that release is there.
    applied = helmfile.run("apply", "--skip-diff-on-install")
    [release] = helmfile.releases()
    assert (release["name"], release["status"], release["revision"]) == (RELEASE, "deployed", "1"), applied.stdout
    workloads = cluster.get("daemonsets,deployments,statefulsets", "-n", helmfile.namespace, "-l", INSTANCE_LABEL)
    assert {item["kind"] for item in workloads["items"]} == {"DaemonSet", "Deployment"}
    for item in workloads["items"]:
        name = f"{item['kind'].lower()}/{item['metadata']['name']}"
        cluster.kubectl("rollout", "status", name, "-n", helmfile.namespace, "--timeout=120s")

    # helm-diff compares what the release would render now with what the API server holds: nothing.
    unchanged = helmfile.run("diff", "--detailed-exitcode")
    assert "No affected releases" in unchanged.stdout + unchanged.stderr
    again = helmfile.run("apply", "--detailed-exitcode")
    assert "Updated Releases" not in again.stdout, again.stdout
    assert [r["revision"] for r in helmfile.releases()] == ["1"], "a second apply upgraded the release"

    helmfile.run("sync")
    [synced] = helmfile.releases()
    assert (synced["status"], synced["revision"]) == ("deployed", "2")

    assert objects_of_the_release(cluster) - KEPT_BY_HELM, "the release made nothing carrying its label"
    helmfile.run("destroy")
    assert helmfile.releases() == []
    remaining = objects_of_the_release(cluster)
    assert remaining <= KEPT_BY_HELM, f"helmfile destroy left {sorted(remaining - KEPT_BY_HELM)}"


def walk_through_step(number: int) -> tuple[list[str], list[str]]:
    """Step ``number`` of docs/kubernetes.md's walk-through: its commands, and the outputs the text after the
    block shows (each in backticks), in order."""
    text = WALK_THROUGH.read_text()
    found = re.search(rf"```sh\n# {number}\. .*?\n(.*?)```\n\n(.*?)\n\n", text, re.DOTALL)
    assert found, f"docs/kubernetes.md has no step {number}"
    commands = [line for line in found[1].splitlines() if line and not line.startswith("#")]
    return commands, re.findall(r"`([^`]+)`", found[2])


@pytest.mark.parametrize("helmfile", ["default"], indirect=True)
def test_the_walk_throughs_workload_step_prints_what_the_document_shows(
    helmfile: Helmfile, cluster: ControlPlane
) -> None:
    """Step 5, a pod with an interposed scratch volume, run as written against the API server after the
    interposer's release (step 4); kwok's node runs the pod to Ready.  The document's outputs are these."""
    helmfile.run("apply", "--skip-diff-on-install")
    commands, shown = walk_through_step(5)
    outputs = []
    for command in commands:
        program, *arguments = shlex.split(command)
        assert program == "kubectl", f"step 5 runs {program}, which this test does not"
        result = cluster.kubectl(*arguments)  # as written: kubectl wait's own 30 s timeout included
        outputs.append(result.stdout.strip())
    assert outputs == shown, f"docs/kubernetes.md shows {shown}; the commands printed {outputs}"
    cluster.kubectl("delete", "pod", "io-under-test", "--wait=false")
