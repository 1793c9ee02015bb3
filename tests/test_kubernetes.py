"""The chart, the collector values and the helmfile, rendered and checked with the real helm, helmfile and
kubernetes-validate; the chart's values schema; and the example workloads' volume attributes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from interposer.cli import csi as csi_command
from interposer.csi.attributes import parse
from interposer.names import CSI_DRIVER_NAME, RESOURCE_K8S_NAMESPACE, RESOURCE_K8S_POD, RESOURCE_LABELS
from tools.upstream_facts import leaf_keys

from .conftest import require, require_command

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "interposer"
HELMFILE = ROOT / "helmfile.d"
KUBERNETES_VERSION = "1.31.0"
CRD_KINDS = {"PodMonitor", "PrometheusRule"}
"""Operator resources: kubernetes-validate has no schema for them; promtool checks the rules they carry."""
VALUES_SETS = {
    "defaults": [],
    "host-root": ["-f", str(CHART / "examples" / "values-host-root.yaml")],
    "minimal": ["-f", str(CHART / "examples" / "values-minimal.yaml")],
}


LIVE_CONTROL_ACCESS = {
    *(("volumeexperiments", verb) for verb in ("get", "list", "watch")),
    ("volumeexperiments/status", "patch"), ("pods", "get"), ("events", "create"), ("events", "patch"),
}  # fmt: skip
"""(resource, verb) of the node plugin's cluster-wide live-control role: it reads the resources and the Pods they
select, writes their status, and records Events (patched to count a repeat up)."""


def run(*command: str, cwd: Path = ROOT, expect_ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120, check=False)
    if expect_ok:
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result


def documents(text: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(text) if document]


def validate(manifests: list[dict[str, Any]], directory: Path) -> None:
    """kubernetes-validate --strict on every manifest that is not an operator resource."""
    validator = Path(sys.executable).with_name("kubernetes-validate")
    require(validator.exists(), f"kubernetes-validate beside {sys.executable}")
    files = []
    for index, manifest in enumerate(manifests):
        if manifest["kind"] in CRD_KINDS:
            continue
        path = directory / f"{index:02d}-{manifest['kind']}.yaml"
        path.write_text(yaml.safe_dump(manifest))
        files.append(str(path))
    result = run(str(validator), "--strict", "-k", KUBERNETES_VERSION, *files, expect_ok=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARN" not in result.stdout + result.stderr, result.stdout + result.stderr


@pytest.fixture(scope="module")
def helm() -> str:
    return require_command("helm")


@pytest.fixture(scope="module")
def helmfile() -> str:
    require_command("helm")
    return require_command("helmfile")


def render(helm: str, *values: str) -> list[dict[str, Any]]:
    output = run(helm, "template", "cnfs", str(CHART), "--namespace", "storage", *values).stdout
    return documents(output)


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_chart_lints_renders_and_validates(helm: str, values_set: str, tmp_path: Path) -> None:
    values = VALUES_SETS[values_set]
    lint = run(helm, "lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in lint.stdout
    manifests = render(helm, *values)
    validate(manifests, tmp_path)
    kinds = {manifest["kind"] for manifest in manifests}
    assert {"CSIDriver", "DaemonSet", "ServiceAccount"} <= kinds
    if values_set == "minimal":
        assert kinds.isdisjoint({"Deployment", "StorageClass", "ClusterRole", "PodMonitor", "PrometheusRule"})
    else:
        assert {"Deployment", "StorageClass", "ClusterRole", "Role", "PodMonitor", "PrometheusRule"} <= kinds
        assert len([m for m in by_kind(manifests, "ConfigMap") if "grafana_dashboard" in m["metadata"]["labels"]]) == 4


def test_chart_objects_say_what_the_driver_does(helm: str) -> None:
    manifests = render(helm, "-f", str(CHART / "examples" / "values-host-root.yaml"))
    [driver] = by_kind(manifests, "CSIDriver")
    assert driver["metadata"]["name"] == CSI_DRIVER_NAME
    assert driver["spec"]["volumeLifecycleModes"] == ["Persistent", "Ephemeral"]
    assert driver["spec"]["podInfoOnMount"] is True
    [storage_class] = by_kind(manifests, "StorageClass")
    assert storage_class["provisioner"] == CSI_DRIVER_NAME
    parse(storage_class["parameters"], "parameters", allow_backing=False)

    [daemonset] = by_kind(manifests, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True, "it makes the volumes' server pods (test_csi_pods: its Role)"
    containers = {container["name"]: container for container in pod["containers"]}
    assert set(containers) == {"plugin", "node-driver-registrar", "liveness-probe"}
    bidirectional = [
        mount["mountPath"]
        for container in containers.values()
        for mount in container.get("volumeMounts", [])
        if mount.get("mountPropagation") == "Bidirectional"
    ]
    assert bidirectional == ["/var/lib/kubelet"], "only the kubelet directory needs Bidirectional propagation"
    assert not any(c.get("securityContext", {}).get("privileged") for n, c in containers.items() if n != "plugin")

    [deployment] = by_kind(manifests, "Deployment")
    controller_containers = deployment["spec"]["template"]["spec"]["containers"]
    controller_plugin = next(c for c in controller_containers if c["name"] == "plugin")
    plugin_args = [*containers["plugin"]["args"], *controller_plugin["args"]]
    known = {option for parameter in csi_command.params for option in parameter.opts}
    for argument in plugin_args[1:]:
        if argument.startswith("--"):
            assert argument.split("=")[0] in known, f"{argument} is not an option of `interposer csi`"

    for role in [*by_kind(manifests, "ClusterRole"), *by_kind(manifests, "Role")]:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"], role["metadata"]["name"]
            assert "*" not in rule["resources"], role["metadata"]["name"]
    cluster_roles = {role["metadata"]["name"].removeprefix("cnfs-interposer-"): role for role in
                     by_kind(manifests, "ClusterRole")}  # fmt: skip
    assert set(cluster_roles) == {"provisioner", "node-live-control", "experimenter", "experiment-viewer"}

    def resources(name: str) -> set[str]:
        return {resource for rule in cluster_roles[name]["rules"] for resource in rule["resources"]}

    assert resources("provisioner") == {
        "persistentvolumes", "persistentvolumeclaims", "storageclasses", "csinodes", "nodes", "events"
    }  # fmt: skip
    live = {(resource, verb) for rule in cluster_roles["node-live-control"]["rules"] for resource in
            rule["resources"] for verb in rule["verbs"]}  # fmt: skip
    assert live == LIVE_CONTROL_ACCESS
    labels = cluster_roles["experimenter"]["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert resources("experimenter") == {"volumeexperiments"}


def test_chart_ships_the_generated_rules_and_dashboards(helm: str) -> None:
    manifests = render(helm)
    [rule] = by_kind(manifests, "PrometheusRule")
    generated = yaml.safe_load((CHART / "rules" / "cnfs-interposer.rules.yaml").read_text())
    assert rule["spec"]["groups"] == generated["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    for monitor in by_kind(manifests, "PodMonitor"):  # the node plugins' and the volume servers'
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    dashboards = {}
    for config_map in by_kind(manifests, "ConfigMap"):
        if "grafana_dashboard" not in config_map["metadata"]["labels"]:
            continue
        [(name, text)] = config_map["data"].items()
        dashboards[name] = json.loads(text)
    for path in (CHART / "dashboards").glob("*.json"):
        assert dashboards[path.name] == json.loads(path.read_text())


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("node.publishTimeout=0", "at '/node/publishTimeout'"),
        ("kubeletDir=relative/path", "at '/kubeletDir'"),
        ("controller.volumesRoot=/srv/../etc", "at '/controller/volumesRoot'"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        ("storageClass.reclaimPolicy=Recycle", "at '/storageClass/reclaimPolicy'"),
        ("telemetry.otlpProtocol=thrift", "at '/telemetry/otlpProtocol'"),
        ("telemetry.tracesSampleRatio=2", "at '/telemetry/tracesSampleRatio'"),
        ("sidecars.provisioner.image=csi-provisioner", "at '/sidecars/provisioner/image'"),
        ("node.colour=red", "at '/node': additional properties 'colour' not allowed"),
    ],
)
def test_values_schema_rejects_bad_values(helm: str, setting: str, expected: str) -> None:
    """Each bad value is named where it is (Helm 4's schema validator gives the field's JSON pointer)."""
    result = run(helm, "lint", str(CHART), "--set", setting, expect_ok=False)
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr, result.stdout + result.stderr


def example_manifests() -> Iterator[Path]:
    yield from sorted((CHART / "examples").glob("*.yaml"))


def test_examples_are_valid_manifests_with_valid_volume_attributes(tmp_path: Path) -> None:
    manifests = []
    attribute_sets = []
    for path in example_manifests():
        if path.name.startswith("values-"):
            continue
        for manifest in documents(path.read_text()):
            manifests.append(manifest)
            if manifest["kind"] == "StorageClass":
                attribute_sets.append((manifest["parameters"], False))
            for volume in manifest.get("spec", {}).get("volumes", []):
                if "csi" in volume:
                    assert volume["csi"]["driver"] == CSI_DRIVER_NAME
                    attribute_sets.append((volume["csi"]["volumeAttributes"], True))
    validate(manifests, tmp_path)
    assert len(attribute_sets) >= 3
    for attributes, inline in attribute_sets:
        parsed = parse(attributes, "volumeAttributes", allow_backing=inline)
        assert parsed.config, f"{attributes} configures nothing"


def collector_config() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((ROOT / "otel-collector" / "values.yaml").read_text())
    return dict(values["config"])


def test_collector_pipelines_are_wired() -> None:
    """The pinned contrib image's component names: k8s_attributes, span_metrics, otlp_grpc (the old names are
    deprecated aliases there), and the prometheus exporter's translation_strategy instead of add_metric_suffixes."""
    config = collector_config()
    pipelines = config["service"]["pipelines"]
    for name in ("traces", "metrics"):
        pipeline = pipelines[name]
        assert pipeline["processors"][0] == "memory_limiter", "memory_limiter must come first"
        assert pipeline["processors"][-1] == "batch"
        assert "k8s_attributes" in pipeline["processors"]
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline[kind]:
                assert component in {**config[kind], **config.get("connectors", {})}, f"{name}: {component} undefined"
    assert {"otlp_grpc/jaeger", "span_metrics"} <= set(pipelines["traces"]["exporters"])
    assert "span_metrics" in pipelines["metrics"]["receivers"]
    prometheus = config["exporters"]["prometheus"]
    assert prometheus["resource_to_telemetry_conversion"]["enabled"] is True
    assert prometheus["translation_strategy"] == "UnderscoreEscapingWithSuffixes"
    association = config["processors"]["k8s_attributes"]["pod_association"][0]["sources"][0]
    assert association == {"from": "resource_attribute", "name": "k8s.pod.uid"}
    # The resource attributes the dashboards and alerts filter by (as labels, converted above) are the ones
    # the processor fills in when an interposer's resource lacks them.
    extracted = set(config["processors"]["k8s_attributes"]["extract"]["metadata"])
    assert {RESOURCE_K8S_NAMESPACE, RESOURCE_K8S_POD} <= extracted & set(RESOURCE_LABELS)


ENVIRONMENTS = ("default", "production")
RELEASES = ["kube-prometheus-stack", "jaeger", "opentelemetry-collector", "grafana", "interposer"]


def helmfile_run(helmfile: str, environment: str, *arguments: str) -> str:
    return run(helmfile, "--file", str(HELMFILE), "--environment", environment, *arguments, cwd=HELMFILE).stdout


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_helmfile_builds_lints_and_renders_each_environment(helmfile: str, environment: str, tmp_path: Path) -> None:
    state = documents(helmfile_run(helmfile, environment, "build"))
    releases = {release["name"]: release for document in state for release in document.get("releases", [])}
    assert list(releases) == RELEASES
    assert releases["interposer"]["needs"] == [
        "observability/kube-prometheus-stack",
        "observability/opentelemetry-collector",
    ]
    assert releases["opentelemetry-collector"]["needs"] == [
        "observability/kube-prometheus-stack",
        "observability/jaeger",
    ]
    # Grafana's chart looks up the admin password it generated: only a diff that reads the cluster sees it unchanged.
    (defaults,) = [document["helmDefaults"] for document in state if "helmDefaults" in document]
    assert "--dry-run=server" in defaults["diffArgs"]
    # helm-diff 3.9 would add --validate, which Helm 4 refuses beside --dry-run (tests/test_helmfile_apply.py).
    assert defaults["disableValidation"] is True
    facts = yaml.safe_load((HELMFILE / "reference" / "upstream-facts.yaml").read_text())["charts"]
    for name, upstream in facts.items():
        assert releases[name]["chart"] == upstream["chart"], f"{name}: chart differs from the facts"
        assert releases[name]["version"] == upstream["version"], f"{name}: pin changed: python -m tools.upstream_facts"

    helmfile_run(helmfile, environment, "lint", "--selector", "name=interposer", "--skip-deps")
    rendered = documents(
        helmfile_run(helmfile, environment, "template", "--selector", "name=interposer", "--skip-deps")
    )
    validate(rendered, tmp_path)

    values_dir = tmp_path / "values"
    helmfile_run(
        helmfile, environment, "write-values", "--skip-deps", "--output-file-template",
        str(values_dir / "{{ .Release.Name }}.yaml"),
    )  # fmt: skip
    for name, upstream in facts.items():
        values = yaml.safe_load((values_dir / f"{name}.yaml").read_text())
        for key in leaf_keys(values):
            assert key in upstream["values_keys"], f"{name}: {key} is not a value of the chart"
    grafana = yaml.safe_load((values_dir / "grafana.yaml").read_text())
    assert "adminPassword" not in grafana
    sources = {source["uid"]: source for source in grafana["datasources"]["datasources.yaml"]["datasources"]}
    assert sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"] == "jaeger"
    assert sources["jaeger"]["jsonData"]["tracesToMetrics"]["datasourceUid"] == "prometheus"
    backends = yaml.safe_load((values_dir / "jaeger.yaml").read_text())["userconfig"]["extensions"]["jaeger_storage"]
    (storage,) = backends["backends"]["traces"]
    if environment == "production":
        assert grafana["admin"]["existingSecret"]
        assert storage == "badger"
        for name in RELEASES:
            assert "limits" in json.dumps(yaml.safe_load((values_dir / f"{name}.yaml").read_text())), name
    else:
        assert storage == "memory"


@pytest.mark.parametrize("trace_callers", [True, False])
def test_the_node_pod_sees_callers_pids_and_environments_only_when_it_traces_callers(
    helm: str, trace_callers: bool
) -> None:
    manifests = render(helm, "--set", f"telemetry.traceCallers={str(trace_callers).lower()}")
    [daemonset] = by_kind(manifests, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod.get("hostPID", False) is trace_callers
    [plugin] = [c for c in pod["containers"] if c["name"] == "plugin"]
    security = plugin["securityContext"]
    assert security.get("privileged") or "SYS_PTRACE" in security.get("capabilities", {}).get("add", []), (
        "reading another user's /proc/<pid>/environ needs CAP_SYS_PTRACE"
    )
