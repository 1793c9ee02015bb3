"""Record what this project relies on in the upstream charts it pins, so the tests can check it without them.

The upstream charts (kube-prometheus-stack, Jaeger, the OpenTelemetry collector, Grafana) cannot live in
this repository, and CI cannot download them.  This script reads them at the versions helmfile.d pins,
lints and renders the whole stack with this project's values in both environments, validates every rendered
object, and writes helmfile.d/reference/upstream-facts.yaml: chart versions, images, Services (name,
labels, ports), ServiceMonitors and PodMonitors, Prometheus' selectors, Grafana's dashboard
sidecar, which of this project's values keys exist upstream, a digest of this project's values per
release, and the CRD schemas of the monitoring.coreos.com kinds the project renders.  tests/
test_stack_facts.py checks the project against that file.  Beside it, under helmfile.d/reference/rendered/
<environment>/, it writes what each program of the stack reads as the charts render it (the collector's and
Jaeger's configurations, the interposer's alert and recording rules): the programs built here
(tools/gobuild.toml) validate and run exactly these, in the tests and in `interposer stack up`.  The facts
also record, for each such program, the module version built here beside the image tag it stands for.

    python -m tools.upstream_facts --charts DIR      # DIR/<chart name> = `helm pull --untar` of each pin
    python -m tools.upstream_facts --pull            # helm pull the pins first (needs the repositories)

helm and helmfile must be on PATH (tasks.sh puts them in .tools/bin).  kubernetes-validate must be
beside this Python.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tools import gobuild

ROOT = Path(__file__).resolve().parent.parent
HELMFILE = ROOT / "helmfile.d"
FACTS = HELMFILE / "reference" / "upstream-facts.yaml"
ENVIRONMENTS = ("default", "production")
KUBERNETES_VERSION = "1.31.0"
"""The Kubernetes version rendered objects are validated against (kubernetes-validate --strict)."""
MONITORING_KINDS = ("PodMonitor", "ServiceMonitor", "PrometheusRule")
"""The monitoring.coreos.com kinds this project itself renders; their schemas go into the facts."""
FREE_FORM = {"opentelemetry-collector": ("config", "ports")}
"""Values whose keys are the user's own, though the chart's values.yaml fills them with examples: the
collector's configuration (checked against the collector's component names separately) and the named
port map (every entry has the fields of the chart's own entries)."""
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
OPERATED_KINDS = ("Prometheus", "Alertmanager")
"""The operator's kinds that run an image of their own (spec.image)."""
RENDERED = HELMFILE / "reference" / "rendered"
CONFIGURATIONS = {
    "otelcol.yaml": ("opentelemetry-collector", "opentelemetry-collector", "relay"),
    "jaeger.yaml": ("jaeger", "user-config", "user-config.yaml"),
    "jaeger-ui.json": ("jaeger", "ui-config", "ui-config.json"),
}
"""Generated file -> (release, ConfigMap, key): the configuration files the charts mount into the programs
(the collector's --config=/conf/relay.yaml, Jaeger's --config /etc/jaeger/user-config.yaml and its UI file)."""
RULES_RELEASE = "interposer"
"""The release whose PrometheusRules are this project's alerts and recording rules; kube-prometheus-stack's own
rules are about cluster components a single machine does not have."""
PROMETHEUS_RELEASE = "kube-prometheus-stack"
"""Its own monitors scrape cluster components; the others' (the collector's, the interposer's) become scrape.yaml."""
MONITOR_FIELDS = {
    "ServiceMonitor": ({"selector", "endpoints"}, "endpoints", "endpoints", "service"),
    "PodMonitor": ({"selector", "podMetricsEndpoints"}, "podMetricsEndpoints", "pod", "pod"),
}
"""kind -> (spec fields translated, the endpoints' field, the service discovery role, the meta label prefix)."""
ENDPOINT_FIELDS = {"port", "interval", "path", "relabelings", "metricRelabelings"}


def run(*command: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def helmfile(environment: str, *arguments: str, charts: Path | None = None) -> str:
    env = dict(os.environ)
    env.pop("UPSTREAM_CHARTS", None)
    if charts is not None:
        env["UPSTREAM_CHARTS"] = str(charts)
    return run("helmfile", "--file", str(HELMFILE), "--environment", environment, *arguments, env=env)


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads a bare `=` (an enum value in the operator's CRDs) as the obsolete value tag: keep it a string."""


def _value_as_string(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:value", _value_as_string)


def documents(text: str) -> list[dict[str, Any]]:
    return [document for document in yaml.load_all(text, Loader=_Loader) if document]


def pinned_releases() -> dict[str, dict[str, Any]]:
    """The upstream releases of helmfile.d (name -> chart, version); the pins are the same in every environment."""
    state = documents(helmfile(ENVIRONMENTS[0], "build"))
    releases = [release for document in state for release in document.get("releases", [])]
    return {release["name"]: release for release in releases if not release["chart"].startswith("../")}


def release_values(environment: str) -> dict[str, Any]:
    """This project's merged values for every release, as helmfile hands them to helm."""
    with tempfile.TemporaryDirectory() as directory:
        helmfile(
            environment, "write-values", "--skip-deps", "--output-file-template",
            str(Path(directory) / "{{ .Release.Name }}.yaml"),
        )  # fmt: skip
        return {path.stem: yaml.safe_load(path.read_text()) or {} for path in Path(directory).glob("*.yaml")}


def values_digest(values: Any) -> str:
    """A digest of a release's values that ignores formatting and comments: facts go stale when it changes."""
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def leaf_keys(values: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths of the values a release sets; a list or an empty map is one value."""
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from leaf_keys(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".")


def _read_by_templates(path: str, templates: str) -> bool:
    """The chart reads `.Values.<path>` as a whole (toYaml, with, if) although its values.yaml only comments it."""
    return re.search(rf"\.Values\.{re.escape(path)}(?![\w.])", templates) is not None


def key_upstream(chart: str, key: str, defaults: dict[str, Any], templates: str) -> str | None:
    """How the chart at the pinned version knows a values key, or None when it does not."""
    parts = key.split(".")
    node: Any = defaults
    for index, part in enumerate(parts):
        path = ".".join(parts[: index + 1])
        if path in FREE_FORM.get(chart, ()):
            return f"free-form under {path}"
        if not isinstance(node, dict) or part not in node:
            if index >= 1 and _read_by_templates(path, templates):
                return f"read whole by the templates as .Values.{path}"
            return None
        node = node[part]
        if index == len(parts) - 1:
            return "values.yaml"
        if node is None or node in ({}, []):
            return f"free-form under {path}"
    return None


def chart_templates(chart_dir: Path) -> str:
    return "\n".join(path.read_text() for path in sorted((chart_dir / "templates").rglob("*")) if path.is_file())


def subchart_versions(chart_dir: Path) -> dict[str, str]:
    versions = {}
    for chart_yaml in sorted((chart_dir / "charts").glob("*/Chart.yaml")):
        meta = yaml.safe_load(chart_yaml.read_text())
        versions[meta["name"]] = str(meta["version"])
    return versions


def strict_schema(schema: Any) -> Any:
    """The CRD's schema as the API server applies it: unknown fields are errors, descriptions dropped.

    CRD schemas are OpenAPI v3.0 schema objects; jsonschema's Draft4Validator reads them as the API server does
    for the keywords they use (type, properties, items, enum, pattern, anyOf, required, minimum...)."""
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict_schema(value) for key, value in schema.items() if key != "description"}
    if isinstance(result.get("pattern"), str):
        # Go's regexp takes `^(?i)...`; Python wants the inline flags first.
        result["pattern"] = re.sub(r"^\^\((\?[a-z]+)\)", r"(\1)^", result["pattern"])
    if (
        result.get("type") == "object"
        and "properties" in result
        and "additionalProperties" not in result
        and not result.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


def crd_schemas(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """apiVersion/kind -> strict schema, for every CRD in the rendered output."""
    schemas = {}
    for crd in manifests:
        if crd["kind"] != "CustomResourceDefinition":
            continue
        for version in crd["spec"]["versions"]:
            key = f"{crd['spec']['group']}/{version['name']}/{crd['spec']['names']['kind']}"
            schemas[key] = strict_schema(version["schema"]["openAPIV3Schema"])
    return schemas


def validate(manifests: list[dict[str, Any]], schemas: dict[str, dict[str, Any]], directory: Path) -> None:
    """Custom resources against their CRDs (jsonschema), everything else with kubernetes-validate --strict."""
    files = []
    for index, manifest in enumerate(manifests):
        key = f"{manifest['apiVersion']}/{manifest['kind']}"
        if key in schemas:
            jsonschema.Draft4Validator(schemas[key]).validate(manifest)
            continue
        if manifest["kind"] == "CustomResourceDefinition":
            continue
        path = directory / f"{index:03d}-{manifest['kind']}.yaml"
        path.write_text(yaml.safe_dump(manifest))
        files.append(str(path))
    validator = Path(sys.executable).with_name("kubernetes-validate")
    output = run(str(validator), "--strict", "-k", KUBERNETES_VERSION, *files)
    if "WARN" in output or "ERROR" in output:
        raise SystemExit(output)


VERSION_LABELS = ("helm.sh/chart", "chart", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "heritage")
"""Labels that only say which version rendered an object; no selector uses them, so the facts leave them out."""


def selectable_labels(metadata: dict[str, Any]) -> dict[str, str]:
    return {key: value for key, value in (metadata.get("labels") or {}).items() if key not in VERSION_LABELS}


def release_of(manifest: dict[str, Any]) -> str:
    labels = manifest["metadata"].get("labels") or {}
    return str(labels.get("app.kubernetes.io/instance") or labels.get("release") or "")


def environment_facts(manifests: list[dict[str, Any]], upstream: set[str]) -> dict[str, Any]:
    """What other releases and the tests address in one environment's rendered stack."""
    facts: dict[str, Any] = {"images": [], "services": {}, "monitors": {}}
    for manifest in manifests:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        instance = release_of(manifest)
        if instance not in upstream:
            continue
        if kind == "Service":
            facts["services"][name] = {
                "release": instance,
                "labels": selectable_labels(manifest["metadata"]),
                "ports": {str(port.get("name", port["port"])): port["port"] for port in manifest["spec"]["ports"]},
            }
        elif kind in WORKLOAD_KINDS:
            containers = manifest["spec"]["template"]["spec"]["containers"]
            facts["images"].extend(container["image"] for container in containers)
            if name == "grafana":
                facts["grafana_sidecar"] = grafana_sidecar(containers)
        elif kind in ("ServiceMonitor", "PodMonitor"):
            endpoints = manifest["spec"].get("endpoints") or manifest["spec"].get("podMetricsEndpoints") or []
            facts["monitors"][f"{kind}/{name}"] = {
                "release": instance,
                "labels": selectable_labels(manifest["metadata"]),
                "selector": manifest["spec"]["selector"].get("matchLabels", {}),
                "ports": [endpoint["port"] for endpoint in endpoints if "port" in endpoint],
            }
        elif kind in OPERATED_KINDS:
            spec = manifest["spec"]
            facts["images"].append(spec["image"])
            if kind == "Prometheus":
                facts["prometheus"] = {key: spec[key] for key in sorted(spec) if key.endswith("Selector")}
    facts["images"] = sorted(set(facts["images"]))
    return facts


def program_configurations(manifests: list[dict[str, Any]]) -> dict[str, str]:
    """Generated file name -> text: each program's configuration as one environment's charts render it."""
    files = {}
    for file_name, (release, name, key) in CONFIGURATIONS.items():
        found = [
            manifest["data"][key]
            for manifest in manifests
            if manifest["kind"] == "ConfigMap"
            and manifest["metadata"]["name"] == name
            and release_of(manifest) == release
        ]
        if len(found) != 1:
            raise SystemExit(f"{len(found)} ConfigMaps {name} with {key} in release {release}")
        files[file_name] = found[0] if found[0].endswith("\n") else found[0] + "\n"
    groups = [
        group
        for manifest in manifests
        if manifest["kind"] == "PrometheusRule" and release_of(manifest) == RULES_RELEASE
        for group in manifest["spec"]["groups"]
    ]
    files["rules.yaml"] = yaml.safe_dump({"groups": groups}, sort_keys=False, width=120)
    files["scrape.yaml"] = yaml.safe_dump({"scrape_configs": scrape_jobs(manifests)}, sort_keys=False, width=120)
    return files


def _relabel(rule: dict[str, Any]) -> dict[str, Any]:
    """A monitoring.coreos.com RelabelConfig as Prometheus spells it."""
    names = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    converted = {names.get(key, key): value for key, value in rule.items()}
    if "action" in converted:
        converted["action"] = converted["action"].lower()
    return converted


def _sanitized(label: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def scrape_jobs(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The scrape jobs prometheus-operator makes of the ServiceMonitors and PodMonitors that are not kube-prometheus-
    stack's own, as its configuration generator writes them (job name, service discovery, selection by labels
    and port, the target labels namespace, service, pod, container, job and endpoint, then the monitor's own
    relabelings).  A monitor field this does not translate is an error, not left out."""
    jobs = []
    for manifest in manifests:
        if manifest["kind"] not in MONITOR_FIELDS or release_of(manifest) == PROMETHEUS_RELEASE:
            continue
        fields, endpoints_field, role, meta = MONITOR_FIELDS[manifest["kind"]]
        spec, namespace, name = manifest["spec"], manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        if set(spec) - fields or set(spec["selector"]) - {"matchLabels"}:
            raise SystemExit(f"{manifest['kind']}/{name}: fields not translated: {sorted(set(spec) - fields)}")
        for index, endpoint in enumerate(spec[endpoints_field]):
            if set(endpoint) - ENDPOINT_FIELDS:
                raise SystemExit(f"{manifest['kind']}/{name}: endpoint fields not translated: {sorted(endpoint)}")
            port = endpoint["port"]
            relabel: list[dict[str, Any]] = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]
            if role == "pod":
                relabel.append(
                    {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"}
                )
            for key, value in sorted(spec["selector"].get("matchLabels", {}).items()):
                label = _sanitized(key)
                present = [f"__meta_kubernetes_{meta}_label_{label}", f"__meta_kubernetes_{meta}_labelpresent_{label}"]
                relabel.append({"action": "keep", "source_labels": present, "regex": f"({value});true"})
            if role == "pod":
                relabel += [
                    {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": port},
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                    {"target_label": "job", "replacement": f"{namespace}/{name}"},
                ]
            else:
                target = [
                    "__meta_kubernetes_endpoint_address_target_kind",
                    "__meta_kubernetes_endpoint_address_target_name",
                ]
                relabel.append(
                    {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": port}
                )
                relabel += [
                    {"source_labels": target, "separator": ";", "regex": f"{kind};(.*)", "target_label": label}
                    for kind, label in (("Node", "node"), ("Pod", "pod"))
                ]
                relabel += [
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                    {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
                    {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
                    {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"},
                ]  # fmt: skip
            relabel.append({"target_label": "endpoint", "replacement": port})
            relabel += [_relabel(rule) for rule in endpoint.get("relabelings", [])]
            job: dict[str, Any] = {
                "job_name": f"{manifest['kind'][0].lower()}{manifest['kind'][1:]}/{namespace}/{name}/{index}",
                "honor_labels": False,
                "kubernetes_sd_configs": [{"role": role, "namespaces": {"names": [namespace]}}],
                "metrics_path": endpoint.get("path", "/metrics"),
                "relabel_configs": relabel,
            }
            if "interval" in endpoint:
                job["scrape_interval"] = endpoint["interval"]
            if endpoint.get("metricRelabelings"):
                job["metric_relabel_configs"] = [_relabel(rule) for rule in endpoint["metricRelabelings"]]
            jobs.append(job)
    return jobs


def program_facts(images: list[str]) -> dict[str, dict[str, str]]:
    """Each program tools/gobuild.toml builds for an image of the stack: its module version and that image."""
    programs = {}
    for name, program in gobuild.load().items():
        if not program.image:
            continue
        if program.image not in images:
            raise SystemExit(f"tools/gobuild.toml [{name}] stands for {program.image}, which no chart renders")
        programs[name] = {"module": program.module, "version": program.version, "image": program.image}
    return programs


def grafana_sidecar(containers: list[dict[str, Any]]) -> dict[str, str]:
    """The ConfigMaps Grafana's dashboard sidecar loads: its LABEL, LABEL_VALUE and NAMESPACE."""
    sidecar = next(container for container in containers if container["name"] == "grafana-sc-dashboard")
    env = {item["name"]: item.get("value") for item in sidecar.get("env", [])}
    return {"label": env["LABEL"], "label_value": env["LABEL_VALUE"], "namespace": env.get("NAMESPACE") or ""}


def collector_renames(chart_dir: Path, metadata: Path | None) -> dict[str, dict[str, str]]:
    """Config section -> {deprecated component name: current name}: what the collector chart rewrites, and, given
    the components' source trees at the collector image's version, what their metadata.yaml files say
    (`type`, `deprecated_type`)."""
    helpers = (chart_dir / "templates" / "_helpers.tpl").read_text()
    body = re.search(r'define "opentelemetry-collector.deprecatedComponentRenames" -}}(.*?){{- end -}}', helpers, re.S)
    if body is None:
        raise SystemExit("the collector chart no longer defines deprecatedComponentRenames")
    renames: dict[str, dict[str, str]] = {
        section: dict(names) for section, names in yaml.safe_load(body.group(1))["components"].items()
    }
    for path in sorted(metadata.rglob("metadata.yaml")) if metadata else []:
        component = yaml.safe_load(path.read_text())
        if isinstance(component, dict) and "deprecated_type" in component:
            section = f"{component['status']['class']}s"
            renames.setdefault(section, {})[component["deprecated_type"]] = component["type"]
    return {section: dict(sorted(names.items())) for section, names in sorted(renames.items())}


def pull(releases: dict[str, dict[str, Any]], directory: Path) -> None:
    state = documents(helmfile(ENVIRONMENTS[0], "build"))
    for document in state:
        for repository in document.get("repositories", []):
            run("helm", "repo", "add", "--force-update", repository["name"], repository["url"])
    for release in releases.values():
        run("helm", "pull", release["chart"], "--version", str(release["version"]), "--untar", "-d", str(directory))


def collect(charts: Path, collector_metadata: Path | None) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """The facts, and each environment's generated program configurations (file name -> text)."""
    releases = pinned_releases()
    facts: dict[str, Any] = {"charts": {}, "environments": {}}
    values_by_environment = {environment: release_values(environment) for environment in ENVIRONMENTS}
    for name, release in releases.items():
        chart_name = release["chart"].rsplit("/", 1)[1]
        chart_dir = charts / chart_name
        meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
        if str(meta["version"]) != str(release["version"]):
            raise SystemExit(f"{chart_dir}: version {meta['version']}, helmfile.d pins {release['version']}")
        defaults = yaml.safe_load((chart_dir / "values.yaml").read_text())
        templates = chart_templates(chart_dir)
        keys: dict[str, str] = {}
        for environment in ENVIRONMENTS:
            for key in leaf_keys(values_by_environment[environment].get(name, {})):
                how = key_upstream(name, key, defaults, templates)
                if how is None:
                    raise SystemExit(f"{name} {release['version']}: the chart has no value {key} ({environment})")
                keys[key] = how
        facts["charts"][name] = {
            "chart": release["chart"],
            "version": str(meta["version"]),
            "app_version": str(meta.get("appVersion", "")),
            "kube_version": str(meta.get("kubeVersion", "")),
            "subcharts": subchart_versions(chart_dir),
            "values_keys": dict(sorted(keys.items())),
        }
        if chart_name == "opentelemetry-collector":
            facts["collector_component_renames"] = collector_renames(chart_dir, collector_metadata)
    schemas: dict[str, dict[str, Any]] = {}
    rendered: dict[str, dict[str, str]] = {}
    for environment in ENVIRONMENTS:
        helmfile(environment, "lint", "--skip-deps", charts=charts)
        output = helmfile(environment, "template", "--skip-deps", "--include-crds", charts=charts)
        manifests = documents(output)
        schemas = crd_schemas(manifests)
        with tempfile.TemporaryDirectory() as directory:
            validate(manifests, schemas, Path(directory))
        environment_fact = environment_facts(manifests, set(releases))
        environment_fact["values_sha256"] = {
            name: values_digest(values_by_environment[environment].get(name, {})) for name in sorted(releases)
        }
        facts["environments"][environment] = environment_fact
        rendered[environment] = program_configurations(manifests)
    facts["programs"] = program_facts(sorted({i for e in facts["environments"].values() for i in e["images"]}))
    facts["crd_schemas"] = {
        key: schema for key, schema in sorted(schemas.items()) if key.rsplit("/", 1)[1] in MONITORING_KINDS
    }
    return facts, rendered


HEADER = """\
# Generated by `python -m tools.upstream_facts` from the upstream charts at the versions helmfile.d pins,
# rendered with this project's values in every environment.  Do not edit: regenerate (see the script and
# docs/kubernetes.md).  tests/test_stack_facts.py checks the project against it.
"""
RENDERED_HEADER = """\
# Generated by `python -m tools.upstream_facts`: this program's configuration as helmfile.d renders it in this
# environment.  Do not edit: change the values and regenerate.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--charts", type=Path, help="directory with <chart name>/ of every pinned chart")
    source.add_argument("--pull", action="store_true", help="helm pull the pinned charts first")
    parser.add_argument(
        "--collector-metadata",
        type=Path,
        help="source trees (core, contrib) of the collector components at the collector image's version",
    )
    parser.add_argument("--output", type=Path, default=FACTS)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as pulled:
        charts = arguments.charts
        if arguments.pull:
            charts = Path(pulled)
            pull(pinned_releases(), charts)
        facts, rendered = collect(charts.resolve(), arguments.collector_metadata)
    arguments.output.write_text(HEADER + yaml.safe_dump(facts, sort_keys=False, width=120))
    print(f"wrote {arguments.output}")
    shutil.rmtree(RENDERED, ignore_errors=True)
    for environment, files in rendered.items():
        directory = RENDERED / environment
        directory.mkdir(parents=True)
        for file_name, text in files.items():
            comment = "" if file_name.endswith(".json") else RENDERED_HEADER
            (directory / file_name).write_text(comment + text)
    print(f"wrote {RENDERED}")


if __name__ == "__main__":
    main()
