"""The per-volume server pods: the spec the node plugin generates, from the settings the chart renders.

No API server runs here: the pod spec is validated with kubernetes-validate
--strict and parsed by the official client's own V1Pod model (what
``create_namespaced_pod`` is given); the chart's RBAC, PodMonitor and plugin
arguments are checked against it.  The API calls themselves are not run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

from interposer.cli import csi as csi_command
from interposer.csi.fusemount import DEFAULT_FLAGS, FSTYPE, SUBTYPE, FuseMountOptions
from interposer.csi.launcher import SERVER_COMMAND, ServerSpec
from interposer.csi.pods import COMPONENT, COMPONENT_LABEL, METRICS_PORT_NAME, PodSettings, pod_body, server_pod
from interposer.csi.volume_server import main as volume_server_command

from .test_kubernetes import CHART, LIVE_CONTROL_ACCESS, by_kind, helm, render, validate

FACTS = json.loads((Path(__file__).with_name("facts") / "libfuse.json").read_text())
LINUX_MOUNT_FLAGS = {"MS_RDONLY": 1, "MS_NOSUID": 2, "MS_NODEV": 4}
STATE = "/var/lib/cnfs-interposer"
__all__ = ["helm"]  # the fixture, shared with test_kubernetes


def chart(helm: str) -> list[dict[str, Any]]:
    return render(helm, "-f", str(CHART / "examples" / "values-host-root.yaml"))


def settings_of(manifests: list[dict[str, Any]]) -> PodSettings:
    [config_map] = [m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-server-pods")]
    return PodSettings.model_validate(yaml.safe_load(config_map["data"]["server-pods.yaml"]))


def spec(backing: str) -> ServerSpec:
    key = "0123456789abcdef0123456789abcdef"
    return ServerSpec(
        key=key,
        backing=Path(backing),
        target=Path("/var/lib/kubelet/pods/7c1e/volumes/kubernetes.io~csi/data/mount"),
        config=Path(f"{STATE}/interposers/{key}.yaml"),
        log=Path(f"{STATE}/interposers/{key}.log"),
        handover=Path(f"{STATE}/servers/{key}.handover.sock"),
        environment={"K8S_POD_NAME": "web-0"},
    )


def test_server_pods_are_valid_unprivileged_and_hold_what_the_server_needs(helm: str, tmp_path: Path) -> None:
    settings = settings_of(chart(helm))
    server = spec("/host-root/data/web")
    manifest = server_pod(server, settings, "node-a")
    validate([manifest], tmp_path)
    sent = ApiClient().sanitize_for_serialization(pod_body(manifest))  # type: ignore[no-untyped-call]
    assert sent == manifest, "the client's V1Pod model keeps every field of the generated spec"

    pod = manifest["spec"]
    assert pod["nodeName"] == "node-a"
    assert pod["restartPolicy"] == "Never", "a restarted container could not get the descriptor back"
    assert pod["automountServiceAccountToken"] is False
    assert "ownerReferences" not in manifest["metadata"], "nothing that the plugin's rollout deletes owns it"
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "SYS_ADMIN" not in security["capabilities"]["add"]
    assert all("/dev/fuse" not in json.dumps(volume) for volume in pod["volumes"]), "it is handed the descriptor"
    assert container["resources"] == {"limits": {"memory": "512Mi"}, "requests": {"cpu": "50m", "memory": "64Mi"}}

    arguments = container["args"]
    assert arguments[0] == SERVER_COMMAND
    parsed = volume_server_command.make_context(SERVER_COMMAND, arguments[1:])
    mounted = [Path(mount["mountPath"]) for mount in container["volumeMounts"]]
    for path in (parsed.params["backing"], parsed.params["handover_path"], parsed.params["config_file"]):
        assert any(path.is_relative_to(root) for root in mounted), f"{path} is not in the pod"
    host_paths = {volume["name"]: volume["hostPath"]["path"] for volume in pod["volumes"]}
    assert host_paths == {  # the volume's own directories, never the driver's records nor other volumes
        "backing": "/srv/interposer/data/web",
        "files": f"{STATE}/interposers",
        "sockets": f"{STATE}/servers",
    }
    environment = {item["name"]: item["value"] for item in container["env"]}
    assert environment["K8S_POD_NAME"] == "web-0"
    assert environment["OTEL_EXPORTER_PROMETHEUS_PORT"] == str(settings.metrics_port)
    # The chart sets a collector, which alone would make OTLP the only exporter: the port would be closed; and
    # OTLP as well would bring every series to Prometheus twice.
    assert environment["OTEL_METRICS_EXPORTER"] == "prometheus"
    [port] = container["ports"]
    assert port == {"name": METRICS_PORT_NAME, "containerPort": settings.metrics_port, "protocol": "TCP"}
    assert manifest["metadata"]["labels"][COMPONENT_LABEL] == COMPONENT


@pytest.mark.parametrize("trace_callers", [True, False])
def test_server_pods_see_callers_pids_and_environments_only_when_they_trace_callers(
    helm: str, tmp_path: Path, trace_callers: bool
) -> None:
    manifests = render(
        helm,
        "-f",
        str(CHART / "examples" / "values-host-root.yaml"),
        "--set",
        f"telemetry.traceCallers={trace_callers}",
    )
    manifest = server_pod(spec("/host-root/data/web"), settings_of(manifests), "node-a")
    validate([manifest], tmp_path)
    pod = manifest["spec"]
    # FUSE reports pids in the namespace of the mounting process (the plugin, hostPID when tracing callers),
    # and the server must read /proc/<pid>/environ in that same namespace, with CAP_SYS_PTRACE.
    assert pod.get("hostPID", False) is trace_callers
    [container] = pod["containers"]
    assert ("SYS_PTRACE" in container["securityContext"]["capabilities"]["add"]) is trace_callers
    assert "SYS_ADMIN" not in container["securityContext"]["capabilities"]["add"]


def test_chart_scrapes_each_server_pod_and_lets_the_plugin_manage_only_pods(helm: str) -> None:
    manifests = chart(helm)
    settings = settings_of(manifests)
    manifest = server_pod(spec(f"{STATE}/fresh/x"), settings, "node-a")
    monitors = {m["metadata"]["name"]: m for m in by_kind(manifests, "PodMonitor")}
    [servers] = [m for name, m in monitors.items() if name.endswith("-volume-servers")]
    assert servers["spec"]["selector"]["matchLabels"].items() <= manifest["metadata"]["labels"].items()
    assert [endpoint["port"] for endpoint in servers["spec"]["podMetricsEndpoints"]] == [METRICS_PORT_NAME]

    [daemonset] = by_kind(manifests, "DaemonSet")
    plugin_pod = daemonset["spec"]["template"]["spec"]
    [plugin] = [c for c in plugin_pod["containers"] if c["name"] == "plugin"]
    [settings_argument] = [a for a in plugin["args"] if a.startswith("--server-pods=")]
    assert "--server-pods" in {option for parameter in csi_command.params for option in parameter.opts}
    settings_path = Path(settings_argument.partition("=")[2])
    assert any(
        settings_path.parent == Path(mount["mountPath"]) and mount["name"] == "server-pods"
        for mount in plugin["volumeMounts"]
    )
    plugin_mounts = {mount["name"]: mount["mountPath"] for mount in plugin["volumeMounts"]}
    for mount in settings.mounts:  # the server sees each host directory where the plugin sees it
        [volume] = [v for v in plugin_pod["volumes"] if v["name"] == mount.name]
        assert volume["hostPath"]["path"] == mount.host_path
        assert plugin_mounts[mount.name] == mount.mount_path

    node_account = plugin_pod["serviceAccountName"]
    bindings = [b for b in by_kind(manifests, "RoleBinding") if b["subjects"][0]["name"] == node_account]
    [binding] = bindings
    # Cluster-wide, the plugin only reads (live control: VolumeExperiments, and the pods whose labels select
    # them), writes VolumeExperiments' status and records Events: it makes and deletes pods in its namespace only.
    cluster_wide = {
        (resource, verb)
        for cluster_binding in by_kind(manifests, "ClusterRoleBinding")
        if cluster_binding["subjects"][0]["name"] == node_account
        for cluster_role in by_kind(manifests, "ClusterRole")
        if cluster_role["metadata"]["name"] == cluster_binding["roleRef"]["name"]
        for rule in cluster_role["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert cluster_wide == LIVE_CONTROL_ACCESS
    [role] = [r for r in by_kind(manifests, "Role") if r["metadata"]["name"] == binding["roleRef"]["name"]]
    assert role["metadata"]["namespace"] == settings.namespace == manifest["metadata"]["namespace"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "delete"]}]
    [server_account] = [
        a for a in by_kind(manifests, "ServiceAccount") if a["metadata"]["name"] == settings.service_account
    ]
    assert server_account["automountServiceAccountToken"] is False


def test_the_plugin_mounts_as_libfuse_would_and_the_server_serves_the_descriptor_as_libfuse_takes_it() -> None:
    """Checked against tests/facts/libfuse.json, extracted from libfuse's and pyfuse3's source (tools/)."""
    options = FuseMountOptions(source="interposer", read_only=False, allow_other=True)
    prefix = FACTS["mount_data_prefix"] % (7, 0o40000, 0, 0)
    data = options.data(7, 0o40000, 0, 0)
    assert data.startswith(prefix + ",")
    assert set(data.removeprefix(prefix + ",").split(",")) <= set(FACTS["kernel_options"])
    assert sum(LINUX_MOUNT_FLAGS[name] for name in FACTS["default_mount_flags"]) == DEFAULT_FLAGS
    assert (
        FuseMountOptions("x", read_only=True, allow_other=False).flags()
        == DEFAULT_FLAGS | LINUX_MOUNT_FLAGS["MS_RDONLY"]
    )
    assert FACTS["mount_type"].replace("<subtype>", SUBTYPE) == FSTYPE
    assert FACTS["descriptor_mountpoint"] % 7 == "/dev/fd/7"
    assert FACTS["descriptor_mountpoint_is_not_unmounted"], "libfuse would unmount what the plugin mounted"
    assert FACTS["pyfuse3_init_passes_mountpoint_to_fuse_session_mount"]
    assert FACTS["pyfuse3_close_unmounts_with_fuse_session_unmount"]


def test_a_settings_file_that_is_not_yaml_is_named_with_its_line(tmp_path: Path) -> None:
    settings = tmp_path / "server-pods.yaml"
    settings.write_text("namespace: csi\n mounts: []\n")
    with pytest.raises(ValueError) as refused:
        PodSettings.load(settings)
    assert str(refused.value).startswith(f"--server-pods {settings}:2:8: not valid YAML: mapping values are not")
