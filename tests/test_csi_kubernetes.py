"""The CSI driver's Kubernetes mode for real: server pods through a real API server (tests/kube.py).

The node plugin runs on this machine with ``--server-pods`` (the settings the chart renders) and the token of
the ServiceAccount the chart makes for it, so every call it makes is checked by the chart's own RBAC.  It
publishes an inline volume for a Pod bound to a kwok node and creates the volume's server pod.  No kubelet runs
containers here, so ``Kubelet`` plays one for the server pods of that node: it starts each pod's process as its
spec says (the image's entrypoint with the pod's args and env, as root with the pod's capabilities and no new
privileges, in a network namespace of its own as a pod has; its hostPath volumes are this machine's paths), and
stops it when the pod is deleted.  kwok reports the pod Running and Ready; the process is the real one behind it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from interposer.csi.attributes import EPHEMERAL, POD_NAME, POD_NAMESPACE, POD_UID
from interposer.csi.metrics import SERVERS_LOST_TOTAL
from interposer.csi.pods import COMPONENT_LABEL, PodSettings
from interposer.local.ports import free_port
from interposer.names import CSI_DRIVER_NAME

from .conftest import require_command, require_fuse, wait_for
from .csi_plugin import CsiPlugin
from .kube import ControlPlane, binary
from .test_csi import publish, stats, unpublish
from .test_kubernetes import ROOT, by_kind, render

RELEASE_NAMESPACE = "csi-pods"
"""The chart's namespace here: its own, so the RBAC tests' release in ``storage`` is untouched."""
APP_NAMESPACE = "shop-pods"
NODE = "node-a"
"""CsiPlugin's --node-id: the kwok node the application Pod and the server pods are bound to."""
APPLIED_KINDS = ("CustomResourceDefinition", "ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                 "ClusterRoleBinding", "ConfigMap")  # fmt: skip
"""What the plugin's calls depend on; the workloads are left out (kwok would only pretend to run them)."""
DELETED = 60.0
"""The launcher's delete_timeout: how long a deleted pod may take to go (kwok's pod-delete stage ends it)."""


def entrypoint() -> list[str]:
    """The image's ENTRYPOINT (the Dockerfile's), which the server pod's container runs with its args."""
    [line] = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("ENTRYPOINT ")]
    program: list[str] = json.loads(line.removeprefix("ENTRYPOINT "))
    return program


class Kubelet:
    """Runs the server pods bound to ``node`` in ``namespace`` as kubelet would, and stops them when deleted."""

    def __init__(self, core: Any, namespace: str, node: str, logs: Path) -> None:
        self.core = core
        self.namespace = namespace
        self.node = node
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        """By pod uid."""
        self.started: list[str] = []
        """The uids of every pod started, in order."""
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="kubelet", daemon=True)
        logs.mkdir(exist_ok=True)

    def __enter__(self) -> Kubelet:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)
        for uid in list(self.running):
            self._stop(uid)

    def _run(self) -> None:
        while not self.stopping.wait(0.1):
            try:
                pods = self.core.list_namespaced_pod(
                    self.namespace, field_selector=f"spec.nodeName={self.node}", _request_timeout=10
                ).items
            except Exception as exc:  # the API server is the test's; a failure is reported, not raised here
                self.errors.append(f"list pods: {exc}")
                continue
            live = {pod.metadata.uid: pod for pod in pods if pod.metadata.deletion_timestamp is None}
            for uid, pod in live.items():
                if uid not in self.running and uid not in self.started:  # restartPolicy Never: run once
                    try:
                        self._start(pod)
                    except (AssertionError, OSError) as exc:  # a spec this kubelet cannot run fails the test
                        self.errors.append(f"start pod {pod.metadata.name}: {exc}")
                        self.started.append(uid)
            for uid in [uid for uid in self.running if uid not in live]:
                self._stop(uid)

    def _start(self, pod: Any) -> None:
        manifest = self.core.api_client.sanitize_for_serialization(pod)
        command = pod_command(manifest)
        [container] = manifest["spec"]["containers"]
        environment = {"PATH": os.environ["PATH"], **{item["name"]: item["value"] for item in container["env"]}}
        with (self.logs / f"{manifest['metadata']['name']}.log").open("ab") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=environment, start_new_session=True
            )
        uid = manifest["metadata"]["uid"]
        self.running[uid] = process
        self.started.append(uid)

    def _stop(self, uid: str) -> None:
        """SIGTERM, then SIGKILL after a grace period, as kubelet ends a deleted pod's container."""
        process = self.running.pop(uid)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def process(self, uid: str) -> subprocess.Popen[bytes]:
        wait_for(lambda: uid in self.running or bool(self.errors), timeout=30, what=f"the process of pod {uid}")
        assert not self.errors, self.errors
        return self.running[uid]


def pod_command(manifest: dict[str, Any]) -> list[str]:
    """The command line of a pod's one container, on this machine.

    The image's entrypoint is the program this checkout's environment installs; each argument that lies in a
    hostPath volume's mountPath is given as the hostPath (here they are the same directories, as the chart's
    settings mount them at the same path).  The container's securityContext is applied: uid 0, exactly the
    capabilities it adds (setpriv's bounding set), no new privileges; and a network namespace of its own with
    only loopback, as a pod has, so its metrics port on 0.0.0.0 is reachable from nowhere else.
    """
    spec = manifest["spec"]
    [container] = spec["containers"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {}
    for mount in container["volumeMounts"]:
        host = Path(volumes[mount["name"]]["hostPath"]["path"])
        assert host.is_dir(), f"hostPath {host} (type Directory) must exist"
        mounts[Path(mount["mountPath"])] = host

    def on_host(argument: str) -> str:
        for inside, host in mounts.items():
            if argument.startswith("/") and Path(argument).is_relative_to(inside):
                return str(host / Path(argument).relative_to(inside))
        return argument

    program = container.get("command") or entrypoint()
    executable = Path(sys.executable).with_name(program[0])
    assert executable.exists(), f"{program[0]}, the image's entrypoint, is installed beside {sys.executable}"
    security = container["securityContext"]
    assert security["runAsUser"] == 0
    assert security["capabilities"]["drop"] == ["ALL"]
    capabilities = ",".join(f"+{name.lower()}" for name in security["capabilities"]["add"])
    privileges = ["--no-new-privs"] if security["allowPrivilegeEscalation"] is False else []
    return [
        "unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
        "setpriv", *privileges, f"--bounding-set=-all,{capabilities}", f"--inh-caps=-all,{capabilities}",
        str(executable), *program[1:], *(on_host(argument) for argument in container["args"]),
    ]  # fmt: skip


@dataclass
class Setup:
    cluster: ControlPlane
    plugin: CsiPlugin
    kubelet: Kubelet
    core: Any
    """kubernetes.client.CoreV1Api as the admin: the test's view, never the plugin's."""
    monitor: dict[str, Any]
    """The chart's PodMonitor of the volume servers."""
    settings: PodSettings
    metrics: str
    """The plugin's own metrics endpoint."""

    def server_pods(self) -> list[Any]:
        selector = ",".join(f"{key}={value}" for key, value in self.monitor["spec"]["selector"]["matchLabels"].items())
        pods = self.core.list_namespaced_pod(RELEASE_NAMESPACE, label_selector=selector).items
        return [pod for pod in pods if pod.metadata.deletion_timestamp is None]

    def application_pod(self, name: str) -> str:
        """A Pod bound to the kwok node with an inline volume of the driver; its uid."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": APP_NAMESPACE},
            "spec": {
                "nodeName": NODE,
                "containers": [
                    {"name": "app", "image": "app:1", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
                ],
                "volumes": [{"name": "data", "csi": {"driver": CSI_DRIVER_NAME}}],
            },
        }
        self.cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(pod))
        uid: str = self.cluster.get("pod", "-n", APP_NAMESPACE, name)["metadata"]["uid"]
        return uid

    def publish(self, name: str, volume_id: str) -> Path:
        """NodePublishVolume as kubelet calls it for the Pod's inline volume; the target path."""
        uid = self.application_pod(name)
        target = self.plugin.kubelet / "pods" / uid / "volumes" / "kubernetes.io~csi" / "data" / "mount"
        publish(self.plugin, volume_id, target, {POD_NAME: name, POD_NAMESPACE: APP_NAMESPACE, POD_UID: uid,
                                                 EPHEMERAL: "true"})  # fmt: skip
        return target

    def servers_lost(self) -> float:
        with urllib.request.urlopen(self.metrics, timeout=10) as response:
            text = response.read().decode()
        found = re.search(rf"^{SERVERS_LOST_TOTAL} (\S+)$", text, re.MULTILINE)
        assert found, f"{SERVERS_LOST_TOTAL} on {self.metrics}"
        return float(found.group(1))


def kubeconfig_for(cluster: ControlPlane, account: str, path: Path) -> Path:
    """A kubeconfig with a token of ``account`` (the TokenRequest API, as a projected token is made)."""
    token = cluster.kubectl("create", "token", account, "-n", RELEASE_NAMESPACE, "--duration=1h").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "tests", "cluster": {"server": cluster.server,
                                                   "certificate-authority": str(cluster.certificates / "ca.crt")}}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "tests", "context": {"cluster": "tests", "user": account}}],
        "current-context": "tests",
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def setup(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    require_fuse()
    for command in ("unshare", "setpriv", "ip", "nsenter"):
        require_command(command)
    from kubernetes import client, config

    root = tmp_path_factory.mktemp("csi-kubernetes")
    root.chmod(0o755)
    for directory in ("state", "volumes"):
        (root / directory).mkdir()
    manifests = render(
        str(binary("helm")), "--include-crds", "--namespace", RELEASE_NAMESPACE,
        "--set", f"node.stateDir={root / 'state'}", "--set", f"controller.volumesRoot={root / 'volumes'}",
    )  # fmt: skip
    [monitor] = [m for m in by_kind(manifests, "PodMonitor") if m["metadata"]["name"].endswith("-volume-servers")]
    [settings_map] = [m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-server-pods")]
    settings_file = root / "server-pods.yaml"
    settings_file.write_text(settings_map["data"]["server-pods.yaml"])
    [account] = [m["metadata"]["name"] for m in by_kind(manifests, "ServiceAccount")
                 if m["metadata"]["name"].endswith("-node")]  # fmt: skip
    applied = root / "chart.yaml"
    applied.write_text(yaml.safe_dump_all([m for m in manifests if m["kind"] in APPLIED_KINDS]))
    deleted = root / "chart-but-crds.yaml"  # the CRD stays, as helm keeps it: later tests apply it again
    deleted.write_text(
        yaml.safe_dump_all(
            [m for m in manifests if m["kind"] in APPLIED_KINDS and m["kind"] != "CustomResourceDefinition"]
        )
    )
    cluster.kubectl("create", "namespace", RELEASE_NAMESPACE)
    cluster.kubectl("create", "namespace", APP_NAMESPACE)
    cluster.kubectl("apply", "--server-side", "-f", str(applied))
    cluster.add_node(NODE)
    kubeconfig = kubeconfig_for(cluster, account, root / "node-plugin.kubeconfig")
    metrics_port = free_port()
    plugin = CsiPlugin(root, "--kubeconfig", str(kubeconfig), "--server-pods", str(settings_file),
                       "--metrics-address", f"127.0.0.1:{metrics_port}")  # fmt: skip
    core = client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig)))  # type: ignore[no-untyped-call]
    try:
        with Kubelet(core, RELEASE_NAMESPACE, NODE, root / "pods") as kubelet:
            plugin.start()
            try:
                yield Setup(cluster, plugin, kubelet, core, monitor, PodSettings.load(settings_file),
                            f"http://127.0.0.1:{metrics_port}/metrics")  # fmt: skip
            finally:
                plugin.stop()
                for publication in plugin.publications():  # what a failed test left: unmount, delete its pod
                    plugin.supervisor().stop(publication)
                    cluster.kubectl("delete", "pod", "-n", RELEASE_NAMESPACE, "--ignore-not-found", "--wait=false",
                                    str(publication.pod))  # fmt: skip
    finally:
        cluster.kubectl("delete", "--wait=false", "--ignore-not-found", "-f", str(deleted), check=False)
        cluster.kubectl("delete", "namespace", RELEASE_NAMESPACE, APP_NAMESPACE, "--wait=false", check=False)


def served_through(target: Path, backing: Path, name: str, data: bytes) -> None:
    """A write through the volume lands in the backing directory and reads back."""
    (target / name).write_bytes(data)
    assert (target / name).read_bytes() == data
    assert (backing / name).read_bytes() == data


def test_server_pod_is_made_run_adopted_and_deleted(setup: Setup) -> None:
    target = setup.publish("app-0", "k8s-1")
    [publication] = [p for p in setup.plugin.publications() if p.target_path == str(target)]

    # (a) the server pod, through the API, as the chart's monitor selects it
    [pod] = setup.server_pods()
    manifest = setup.core.api_client.sanitize_for_serialization(pod)
    assert publication.pod == pod.metadata.name
    assert pod.metadata.namespace == setup.monitor["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert setup.monitor["spec"]["selector"]["matchLabels"].items() <= pod.metadata.labels.items()
    assert pod.metadata.labels[COMPONENT_LABEL] == "volume-server"
    [container] = manifest["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    [endpoint] = setup.monitor["spec"]["podMetricsEndpoints"]
    assert ports[endpoint["port"]] == setup.settings.metrics_port
    assert pod.spec.service_account_name.endswith("-volume-server")
    assert pod.spec.node_name == NODE
    wait_for(lambda: any(c.type == "Ready" and c.status == "True"
                         for c in setup.core.read_namespaced_pod(pod.metadata.name, RELEASE_NAMESPACE).status.conditions
                         or []), timeout=60, what="kwok to report the server pod Ready")  # fmt: skip

    # (b) the process behind it, started as its spec says, serves real I/O
    assert setup.kubelet.started == [pod.metadata.uid]
    process = setup.kubelet.process(pod.metadata.uid)
    backing = Path(publication.backing)
    served_through(target, backing, "before-restart", b"written through the server pod")
    scrape = [  # the port the monitor scrapes, from inside the pod's network namespace
        "nsenter", f"--net=/proc/{process.pid}/ns/net", sys.executable, "-c",
        "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())",
        f"http://127.0.0.1:{ports[endpoint['port']]}/metrics",
    ]  # fmt: skip
    scraped = subprocess.run(scrape, capture_output=True, text=True, timeout=30, check=False)
    assert scraped.returncode == 0, f"the server pod's {endpoint['port']} port: {scraped.stderr[-2000:]}"

    # (c) a restarted plugin adopts the pod: the volume serves on, no second pod, healthy stats
    plugin_process = setup.plugin.process
    assert plugin_process is not None
    plugin_process.kill()
    plugin_process.wait(timeout=20)
    setup.plugin.process = None
    served_through(target, backing, "plugin-down", b"served with no plugin")
    setup.plugin.start()
    condition = stats(setup.plugin, "k8s-1", target).volume_condition
    assert not condition.abnormal, condition.message
    assert f"pod {pod.metadata.name}" in condition.message
    served_through(target, backing, "after-restart", b"served after the restart")
    assert [p.metadata.uid for p in setup.server_pods()] == [pod.metadata.uid]
    assert setup.kubelet.started == [pod.metadata.uid]
    assert "adopted volume k8s-1" in setup.plugin.log()

    # (d) unpublish deletes the pod
    unpublish(setup.plugin, "k8s-1", target)
    wait_for(lambda: not setup.server_pods(), timeout=DELETED, what="the server pod's deletion")
    wait_for(lambda: pod.metadata.uid not in setup.kubelet.running, timeout=30, what="its process to end")
    assert not target.exists()


def test_a_server_pod_deleted_behind_the_plugins_back_is_noticed_logged_and_counted(setup: Setup) -> None:
    target = setup.publish("app-1", "k8s-2")
    [pod] = setup.server_pods()
    served_through(target, Path(setup.plugin.publications()[0].backing), "file", b"data")
    before = setup.servers_lost()
    setup.core.delete_namespaced_pod(pod.metadata.name, RELEASE_NAMESPACE)
    wait_for(lambda: setup.servers_lost() == before + 1, timeout=DELETED, what=f"{SERVERS_LOST_TOTAL} to count it")
    # Whichever the plugin sees first names the loss: the pod missing from the API, or the mount its process
    # served no longer answering (the kubelet has stopped that process by then).
    reasons = (f"the server pod {pod.metadata.name} is gone", "the mount does not answer")
    logged = [line for line in setup.plugin.log().splitlines() if f"volume k8s-2 at {target}: " in line]
    assert any(reason in line for line in logged for reason in reasons), logged
    condition = stats(setup.plugin, "k8s-2", target).volume_condition
    assert condition.abnormal
    assert any(reason in condition.message for reason in reasons), condition.message
    assert setup.servers_lost() == before + 1, "counted once"
    unpublish(setup.plugin, "k8s-2", target)
    assert not setup.server_pods()
    assert not setup.kubelet.errors, setup.kubelet.errors
