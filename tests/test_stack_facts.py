"""The helmfile stack checked against helmfile.d/reference/upstream-facts.yaml: what the upstream charts render
at the pinned versions with this project's values (tools/upstream_facts.py writes it from the charts, which
cannot be here).  Every cross-release address must name a rendered Service and port, every monitor must be
selected by Prometheus and scrape a port its target has, the dashboards must reach Grafana's sidecar, and the
interposer's monitoring objects must validate against the pinned operator's CRD schemas."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from interposer.csi.launcher import ServerSpec
from interposer.csi.pods import PodSettings, server_pod
from interposer.names import prometheus_label
from tools import gobuild
from tools.upstream_facts import key_upstream, strict_schema, values_digest

from .conftest import require_command
from .test_kubernetes import ENVIRONMENTS, HELMFILE, ROOT, by_kind, documents, helmfile_run

FACTS = HELMFILE / "reference" / "upstream-facts.yaml"
NAMESPACE = "observability"
DASHBOARDS = 4
"""overview, latency, faults and the telemetry pipeline (dashboards/)."""


@dataclass(frozen=True)
class Environment:
    """One helmfile environment as this project renders it, without the upstream charts."""

    name: str
    values: dict[str, dict[str, Any]]
    interposer: list[dict[str, Any]]
    facts: dict[str, Any]


@pytest.fixture(scope="module")
def facts() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(FACTS.read_text())
    return loaded


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def environment(
    request: pytest.FixtureRequest, facts: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Environment:
    require_command("helm")
    helmfile = require_command("helmfile")
    name: str = request.param
    directory = tmp_path_factory.mktemp(f"values-{name}")
    helmfile_run(
        helmfile, name, "write-values", "--skip-deps", "--output-file-template",
        str(directory / "{{ .Release.Name }}.yaml"),
    )  # fmt: skip
    values = {path.stem: yaml.safe_load(path.read_text()) or {} for path in directory.glob("*.yaml")}
    interposer = documents(helmfile_run(helmfile, name, "template", "--selector", "name=interposer", "--skip-deps"))
    return Environment(name, values, interposer, facts["environments"][name])


def matches(labels: dict[str, str], selector: dict[str, Any]) -> bool:
    """A label selector of matchLabels only (what every selector in this stack uses)."""
    assert set(selector) <= {"matchLabels"}, f"selector {selector} has more than matchLabels"
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def service_port(environment: Environment, address: str) -> str:
    """The name of the Service port an in-cluster address (URL or host:port) reaches; fails if none does."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    host, port = parts.hostname or "", parts.port
    match = re.fullmatch(r"(?P<service>[a-z0-9-]+)\.(?P<namespace>[a-z0-9-]+)\.svc", host)
    assert match, f"{address}: not <service>.<namespace>.svc"
    assert match["namespace"] == NAMESPACE, f"{address}: the stack runs in {NAMESPACE}"
    services = environment.facts["services"]
    assert match["service"] in services, f"{address}: no Service {match['service']} (have {sorted(services)})"
    ports = services[match["service"]]["ports"]
    names = [name for name, number in ports.items() if number == port]
    assert names, f"{address}: Service {match['service']} has no port {port} ({ports})"
    return str(names[0])


def test_facts_were_generated_from_these_pins_and_values(environment: Environment, facts: dict[str, Any]) -> None:
    """Changing a pin or a value that the facts depend on without regenerating them fails here."""
    for release, digest in environment.facts["values_sha256"].items():
        values = environment.values[release]
        assert values_digest(values) == digest, (
            f"{release}: its values changed since the facts were generated: python -m tools.upstream_facts"
        )
    assert set(environment.facts["values_sha256"]) == set(facts["charts"])


def test_cross_release_addresses_resolve_to_service_ports(environment: Environment) -> None:
    values = environment.values
    collector = values["opentelemetry-collector"]["config"]
    assert service_port(environment, collector["exporters"]["otlp_grpc/jaeger"]["endpoint"]) == "otlp-grpc"
    jaeger_storage = values["jaeger"]["userconfig"]["extensions"]["jaeger_storage"]
    monitor_backend = jaeger_storage["metric_backends"]["span_metrics"]["prometheus"]["endpoint"]
    assert service_port(environment, monitor_backend) == "http-web"
    assert urlsplit(monitor_backend).hostname == f"kube-prometheus-stack-prometheus.{NAMESPACE}.svc"
    sources = values["grafana"]["datasources"]["datasources.yaml"]["datasources"]
    expected = {
        "prometheus": ("kube-prometheus-stack-prometheus", "http-web"),
        "alertmanager": ("kube-prometheus-stack-alertmanager", "http-web"),
        "jaeger": ("jaeger", "http-query"),
    }
    assert {source["uid"] for source in sources} == set(expected)
    for source in sources:
        service, port = expected[source["uid"]]
        assert urlsplit(source["url"]).hostname == f"{service}.{NAMESPACE}.svc", source
        assert service_port(environment, source["url"]) == port, source
    assert service_port(environment, values["interposer"]["telemetry"]["otlpEndpoint"]) == "otlp"
    # The ServiceMonitor's `metrics` port is the one the collector's own telemetry listens on.
    reader = collector["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]
    assert environment.facts["services"]["opentelemetry-collector"]["ports"]["metrics"] == reader["port"]


def test_prometheus_selects_every_monitor_and_each_scrapes_a_port_its_target_has(environment: Environment) -> None:
    prometheus = environment.facts["prometheus"]
    for namespace_selector in (
        "serviceMonitorNamespaceSelector",
        "podMonitorNamespaceSelector",
        "ruleNamespaceSelector",
    ):
        assert prometheus[namespace_selector] == {}, f"{namespace_selector}: Prometheus must look in every namespace"
    services = environment.facts["services"]
    for name, monitor in environment.facts["monitors"].items():
        kind = name.split("/")[0]
        assert matches(monitor["labels"], prometheus[f"{kind[0].lower()}{kind[1:]}Selector"]), f"{name} not selected"
        assert kind == "ServiceMonitor", f"{name}: no upstream PodMonitor is expected"
        targets = {
            service: facts
            for service, facts in services.items()
            if matches(facts["labels"], {"matchLabels": monitor["selector"]})
        }
        if not targets and monitor["release"] == "kube-prometheus-stack":
            continue  # kubelet, API server: Services outside the stack's releases
        assert targets, f"{name} selects no Service"
        for service, target in targets.items():
            for port in monitor["ports"]:
                assert port in target["ports"], f"{name}: Service {service} has no port {port} ({target['ports']})"
    assert "ServiceMonitor/opentelemetry-collector" in environment.facts["monitors"]
    assert set(environment.facts["monitors"]["ServiceMonitor/opentelemetry-collector"]["ports"]) == {
        "metrics", "prom-exporter",
    }  # fmt: skip

    # The node plugin's pods come from its DaemonSet; each volume's server pod from the plugin's code, with
    # the settings the chart renders (interposer.csi.pods).
    pods = [
        workload["spec"]["template"]
        for workload in environment.interposer
        if workload["kind"] in ("DaemonSet", "Deployment", "StatefulSet")
    ]
    [settings] = [
        PodSettings.model_validate(yaml.safe_load(config_map["data"]["server-pods.yaml"]))
        for config_map in by_kind(environment.interposer, "ConfigMap")
        if "server-pods.yaml" in config_map.get("data", {})
    ]
    pods.append(server_pod(server_spec(), settings, "node-a"))
    pod_monitors = by_kind(environment.interposer, "PodMonitor")
    assert len(pod_monitors) == 2, "one PodMonitor for the node plugins, one for the volume servers"
    for pod_monitor in pod_monitors:
        assert matches(pod_monitor["metadata"]["labels"], prometheus["podMonitorSelector"])
        selected = [pod for pod in pods if matches(pod["metadata"]["labels"], pod_monitor["spec"]["selector"])]
        assert selected, f"the PodMonitor {pod_monitor['metadata']['name']} selects no pod"
        for pod in selected:
            ports = {port["name"] for container in pod["spec"]["containers"] for port in container.get("ports", [])}
            for endpoint in pod_monitor["spec"]["podMetricsEndpoints"]:
                assert endpoint["port"] in ports, f"{pod_monitor['metadata']['name']}: no port {endpoint['port']}"
    for rule in by_kind(environment.interposer, "PrometheusRule"):
        assert matches(rule["metadata"]["labels"], prometheus["ruleSelector"]), rule["metadata"]["name"]


def server_spec() -> ServerSpec:
    """A volume server as the node plugin describes one, under the chart's default state directory."""
    key, state = "0123456789abcdef0123456789abcdef", Path("/var/lib/cnfs-interposer")
    return ServerSpec(
        key=key,
        backing=Path("/var/lib/cnfs-interposer/volumes/pvc-1"),
        target=Path("/var/lib/kubelet/pods/7c1e/volumes/kubernetes.io~csi/data/mount"),
        config=state / "interposers" / f"{key}.yaml",
        log=state / "interposers" / f"{key}.log",
        handover=state / "servers" / f"{key}.handover.sock",
        environment={},
    )


def test_grafana_sidecar_loads_the_four_dashboards(environment: Environment) -> None:
    sidecar = environment.facts["grafana_sidecar"]
    assert sidecar["namespace"] in ("ALL", NAMESPACE)
    dashboards = [
        config_map
        for config_map in by_kind(environment.interposer, "ConfigMap")
        if (config_map["metadata"].get("labels") or {}).get(sidecar["label"]) == sidecar["label_value"]
    ]
    assert len(dashboards) == DASHBOARDS
    assert all(next(iter(config_map["data"])).endswith(".json") for config_map in dashboards)


def crd_validator(facts: dict[str, Any], manifest: dict[str, Any]) -> jsonschema.Draft4Validator:
    schema = facts["crd_schemas"][f"{manifest['apiVersion']}/{manifest['kind']}"]
    return jsonschema.Draft4Validator(schema)


def test_monitoring_objects_validate_against_the_pinned_crd_schemas(
    environment: Environment, facts: dict[str, Any]
) -> None:
    monitoring = [m for m in environment.interposer if m["apiVersion"].startswith("monitoring.coreos.com/")]
    assert {manifest["kind"] for manifest in monitoring} == {"PodMonitor", "PrometheusRule"}
    for manifest in monitoring:
        crd_validator(facts, manifest).validate(manifest)
        # Strict: a misspelled field is an error, as the API server's pruning would silently drop it.
        misspelled = copy.deepcopy(manifest)
        misspelled["spec"]["unknownField"] = True
        assert not crd_validator(facts, misspelled).is_valid(misspelled), manifest["kind"]


def test_jaeger_v2_is_configured_explicitly(environment: Environment, facts: dict[str, Any]) -> None:
    jaeger = environment.values["jaeger"]
    config = jaeger["userconfig"]
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == f"0.0.0.0:{environment.facts['services']['jaeger']['ports']['otlp-grpc']}"
    assert protocols["http"]["endpoint"] == f"0.0.0.0:{environment.facts['services']['jaeger']['ports']['otlp-http']}"
    query = config["extensions"]["jaeger_query"]
    assert query["http"]["endpoint"] == f"0.0.0.0:{environment.facts['services']['jaeger']['ports']['http-query']}"
    storage = config["extensions"]["jaeger_storage"]
    assert query["storage"]["metrics"] in storage["metric_backends"], "the Monitor tab has no metrics backend"
    # The Monitor tab reads the span metrics by the names the collector's span_metrics connector gives them.
    backend_settings = storage["metric_backends"][query["storage"]["metrics"]]["prometheus"]
    connector = environment.values["opentelemetry-collector"]["config"]["connectors"]["span_metrics"]
    assert backend_settings["metric_namespace"] == prometheus_label(connector["namespace"])
    assert backend_settings["latency_unit"] == connector["histogram"]["unit"]
    assert backend_settings["normalize_calls"] is backend_settings["normalize_duration"] is True
    assert jaeger["uiconfig"]["monitor"]["menuEnabled"] is True
    (backend,) = storage["backends"][query["storage"]["traces"]].items()
    if environment.name == "production":
        kind, settings = backend
        assert kind == "badger"
        assert settings["ephemeral"] is False
        (mount,) = jaeger["jaeger"]["extraVolumeMounts"]
        for directory in settings["directories"].values():
            assert Path(directory).is_relative_to(mount["mountPath"]), directory
        (volume,) = [volume for volume in jaeger["jaeger"]["extraVolumes"] if volume["name"] == mount["name"]]
        claims = [item for item in jaeger["extraObjects"] if item["kind"] == "PersistentVolumeClaim"]
        assert [claim["metadata"]["name"] for claim in claims] == [volume["persistentVolumeClaim"]["claimName"]]
    else:
        assert backend[0] == "memory"
    images = [image for image in environment.facts["images"] if image.startswith("jaegertracing/jaeger:")]
    assert images == [facts["programs"]["jaeger"]["image"]]
    assert re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+", images[0]), f"{images[0]}: not a GA Jaeger v2 release"


def image_tag(module: str, version: str) -> str:
    """The release tag of a program's image that a module version of it is, by each project's own numbering."""
    major, minor, patch = (int(part) for part in version.removeprefix("v").split("."))
    if module == "github.com/prometheus/prometheus":
        return f"v{minor // 100}.{minor % 100}.{patch}"  # module v0.314.0 is Prometheus v3.14.0
    if module == "github.com/jaegertracing/jaeger":
        return f"2.{minor - 63}.{patch}"  # each release is tagged v1.(63+n) and v2.n on one commit (v1.63.0/v2.0.0)
    if module == "go.opentelemetry.io/collector/cmd/builder":
        return f"{major}.{minor}.{patch}"  # the builder of the collector release the image is
    return version


def test_each_program_built_here_is_the_image_the_charts_run(facts: dict[str, Any]) -> None:
    """The version you test is the version you deploy: every program tools/gobuild.toml builds for the stack is,
    by its module version, the image tag the charts render in every environment, and the facts record both."""
    programs = {name: program for name, program in gobuild.load().items() if program.image}
    assert set(programs) == {"otelcol", "jaeger", "prometheus", "alertmanager"}
    assert facts["programs"] == {
        name: {"module": program.module, "version": program.version, "image": program.image}
        for name, program in programs.items()
    }, "regenerate the facts (python -m tools.upstream_facts)"
    for name, program in programs.items():
        tag = program.image.rpartition(":")[2]
        assert tag.split("-")[0] == image_tag(program.module, program.version), f"{name}: {program.image}"
        for environment, rendered in facts["environments"].items():
            assert program.image in rendered["images"], f"{environment} does not run {program.image}"


def test_the_collector_manifest_is_one_release_of_the_image(facts: dict[str, Any]) -> None:
    """The collector built here is made of components of the one release its image is."""
    program = gobuild.load()["otelcol"]
    manifest = yaml.safe_load((gobuild.FILES / program.manifest).read_text())
    release = program.version.removeprefix("v")
    assert manifest["dist"]["version"] == release
    versions = {
        item["gomod"].split()[0]: item["gomod"].split()[1]
        for section in ("receivers", "processors", "connectors", "exporters", "extensions", "providers")
        for item in manifest.get(section, [])
    }
    for module, version in versions.items():
        # Stable modules are numbered v1.x: v1.71.0 (core) and v1.4.0 (k8sattributesprocessor) go with v0.165.0.
        assert version == program.version or version.startswith("v1."), f"{module} {version}"


def test_collector_uses_no_deprecated_component_name(facts: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "otel-collector" / "values.yaml").read_text())["config"]
    for section, renames in facts["collector_component_renames"].items():
        used = {name.split("/")[0] for name in config.get(section) or {}}
        assert not used & set(renames), f"{section}: deprecated names {sorted(used & set(renames))}"
    assert "add_metric_suffixes" not in config["exporters"]["prometheus"]


def test_facts_script_finds_keys_as_a_chart_knows_them() -> None:
    """The rules tools/upstream_facts.py judges a values key by, on a chart made up for the purpose."""
    defaults = {"image": {"tag": ""}, "resources": {}, "config": None, "sidecar": {"enabled": False}}
    templates = "{{- with .Values.sidecar.resources }}{{ toYaml . }}{{- end }} {{ .Values.sidecar.enabledX }}"
    assert key_upstream("chart", "image.tag", defaults, templates) == "values.yaml"
    assert key_upstream("chart", "resources.limits.cpu", defaults, templates) == "free-form under resources"
    assert key_upstream("chart", "config.a.b", defaults, templates) == "free-form under config"
    assert key_upstream("chart", "sidecar.resources.limits.cpu", defaults, templates) == (
        "read whole by the templates as .Values.sidecar.resources"
    )
    for missing in ("image.repository", "sidecar.enable", "nothing", "image.tag.extra"):
        assert key_upstream("chart", missing, defaults, templates) is None, missing


def test_facts_script_makes_crd_schemas_strict() -> None:
    schema = strict_schema({
        "type": "object",
        "description": "dropped",
        "properties": {
            "spec": {"type": "object", "properties": {"mode": {"type": "string", "pattern": "^(?i)(abort|warn)?$"}}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {}},
        },
    })  # fmt: skip
    validator = jsonschema.Draft4Validator(schema)
    assert "description" not in schema
    assert validator.is_valid({"spec": {"mode": "WARN"}, "free": {"anything": 1}})
    assert not validator.is_valid({"spec": {"mode": "WARN", "typo": 1}})
    assert not validator.is_valid({"spec": {"mode": "never"}})
