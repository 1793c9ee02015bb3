"""Live control for real: a VolumeExperiment in a real API server (tests/kube.py) changes a real FUSE volume.

The node plugin runs as a process with the cluster's kubeconfig; a Pod object, bound to a kwok node, holds
an inline volume that opts in; the plugin publishes it as kubelet would, with the Pod's name, namespace and
uid.  The workload is this test's reads of a file in the volume.  Each change is timed from the API write
(or from the moment expiry falls due, or the plugin's restart) to the first read that shows it: under 2 s.
"""

from __future__ import annotations

import errno
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from interposer.csi import crd
from interposer.csi.attributes import EPHEMERAL, LIVE_CONTROL, POD_NAME, POD_NAMESPACE, POD_UID
from interposer.csi.experiment import GROUP, PLURAL, VERSION, Experiment
from interposer.names import CSI_DRIVER_NAME

from .conftest import require_fuse, wait_for
from .csi_plugin import CsiPlugin
from .test_csi import publish

if TYPE_CHECKING:
    from .kube import ControlPlane

NAMESPACE = "shop"
NODE = "node-a"
"""CsiPlugin's --node-id: the kwok node the Pod is bound to."""
TAKES_EFFECT = 2.0
"""The issue's bound: from the API write to the first request that sees the change."""
EIO_ON_READ = {"rules": [{"name": "game-day", "match": {"operations": ["read"]}, "action": {"errno": "EIO"}}]}


def errno_rule(symbol: str) -> dict[str, Any]:
    return {"rules": [{"name": "game-day", "match": {"operations": ["read"]}, "action": {"errno": symbol}}]}


def read_outcome(path: Path) -> int:
    """0 for a successful read of the file, else the errno the workload saw."""
    try:
        with path.open("rb") as file:
            file.read()
    except OSError as exc:
        return exc.errno or -1
    return 0


def time_until(path: Path, outcome: int, since: float, timeout: float = 15.0) -> float:
    """Seconds from ``since`` (time.monotonic) until a read of ``path`` gives ``outcome``."""
    what = f"a read giving {errno.errorcode.get(outcome, 'success')}"
    wait_for(lambda: read_outcome(path) == outcome, timeout=timeout, what=what)
    took = time.monotonic() - since
    print(f"{what}: {took:.3f} s")  # the measurements, shown with -s and in a failure's report
    return took


@dataclass
class Setup:
    cluster: ControlPlane
    plugin: CsiPlugin
    api: Any
    """kubernetes.client.CustomObjectsApi as the admin."""
    core: Any
    pod_uid: str
    file: Path

    def create(self, name: str, spec: dict[str, Any]) -> float:
        """Create a resource selecting the Pod; the monotonic time just before the write."""
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VolumeExperiment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"selector": {"matchLabels": {"app": "db"}}, **spec},
        }
        started = time.monotonic()
        self.api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body, field_validation="Strict")
        return started

    def patch(self, name: str, spec: dict[str, Any]) -> float:
        started = time.monotonic()
        self.api.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, name, {"spec": spec}, _content_type="application/merge-patch+json"
        )
        return started

    def delete(self, name: str) -> float:
        started = time.monotonic()
        self.api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
        return started

    def get(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = self.api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
        return body

    def condition(self, name: str, kind: str) -> str | None:
        for condition in (self.get(name).get("status") or {}).get("conditions") or []:
            if condition["type"] == kind:
                return str(condition["status"])
        return None

    def event_reasons(self, uid: str) -> list[str]:
        events = self.core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.uid={uid}")
        return [event.reason for event in events.items]


@pytest.fixture(scope="module")
def setup(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    require_fuse()
    from kubernetes import client, config

    cluster.kubectl("apply", "--server-side", "-f", str(crd.OUTPUT))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.add_node(NODE)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "db-0", "namespace": NAMESPACE, "labels": {"app": "db"}},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "db", "image": "db:1", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [
                {"name": "data", "csi": {"driver": CSI_DRIVER_NAME, "volumeAttributes": {LIVE_CONTROL: "true"}}}
            ],
        },
    }
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(pod))
    uid = cluster.get("pod", "-n", NAMESPACE, "db-0")["metadata"]["uid"]
    root = tmp_path_factory.mktemp("live-control")
    root.chmod(0o755)
    plugin = CsiPlugin(root, "--kubeconfig", str(cluster.kubeconfig))
    plugin.start()
    try:
        target = plugin.kubelet / "pods" / uid / "volumes" / "kubernetes.io~csi" / "data" / "mount"
        context = {POD_NAME: "db-0", POD_NAMESPACE: NAMESPACE, POD_UID: uid, EPHEMERAL: "true", LIVE_CONTROL: "true"}
        publish(plugin, "live-1", target, context)
        (target / "table").write_bytes(b"rows")
        api_client = config.new_client_from_config(str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
        ready = Setup(
            cluster, plugin, client.CustomObjectsApi(api_client), client.CoreV1Api(api_client), uid, target / "table"
        )
        # The plugin's live control starts beside its gRPC service (the Kubernetes client's import, a list, a
        # watch): the timings below start once it has seen and reconciled a resource, which selects nothing.
        ready.api.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "VolumeExperiment",
                "metadata": {"name": "warm-up", "namespace": NAMESPACE},
                "spec": {"selector": {"matchLabels": {"app": "none"}}, "faults": EIO_ON_READ},
            },
        )  # fmt: skip
        wait_for(lambda: "status" in ready.get("warm-up"), what="live control to reconcile a first resource")
        ready.delete("warm-up")
        yield ready
    finally:
        plugin.cleanup()


def test_create_update_delete_take_effect_live(setup: Setup) -> None:
    assert read_outcome(setup.file) == 0
    took = time_until(setup.file, errno.EIO, setup.create("read-errors", {"faults": EIO_ON_READ}))
    assert took < TAKES_EFFECT, f"applying took {took:.2f}s"
    wait_for(lambda: setup.condition("read-errors", "Applied") == "True", what="the Applied condition")
    status = setup.get("read-errors")["status"]
    [target] = status["targets"].values()
    assert (target["pod"], target["volume"], target["node"]) == ("db-0", "data", NODE)
    assert (target["phase"], target["generation"], target["sections"]) == ("Applied", 1, ["faults"])
    uid = setup.get("read-errors")["metadata"]["uid"]
    wait_for(lambda: "LiveControlApplied" in setup.event_reasons(setup.pod_uid), what="an Event on the Pod")
    wait_for(lambda: "LiveControlApplied" in setup.event_reasons(uid), what="an Event on the resource")

    # What IOChaos refuses ("Cannot update chaos spec"): the spec changes while the experiment runs.
    took = time_until(setup.file, errno.EACCES, setup.patch("read-errors", {"faults": errno_rule("EACCES")}))
    assert took < TAKES_EFFECT, f"updating took {took:.2f}s"
    wait_for(lambda: setup.get("read-errors")["status"]["targets"]["db-0/data"]["generation"] == 2, what="gen 2")

    took = time_until(setup.file, 0, setup.delete("read-errors"))
    assert took < TAKES_EFFECT, f"reverting on delete took {took:.2f}s"
    wait_for(lambda: "LiveControlReverted" in setup.event_reasons(setup.pod_uid), what="a revert Event on the Pod")


def test_pausing_reverts_and_resuming_applies(setup: Setup) -> None:
    time_until(setup.file, errno.EIO, setup.create("pausable", {"faults": EIO_ON_READ}))
    took = time_until(setup.file, 0, setup.patch("pausable", {"paused": True}))
    assert took < TAKES_EFFECT, f"pausing took {took:.2f}s"
    wait_for(lambda: setup.condition("pausable", "Applied") == "False", what="Applied False while paused")
    took = time_until(setup.file, errno.EIO, setup.patch("pausable", {"paused": False}))
    assert took < TAKES_EFFECT, f"resuming took {took:.2f}s"
    time_until(setup.file, 0, setup.delete("pausable"))


def expiry_of(setup: Setup, name: str) -> float:
    """The monotonic time at which the resource's duration ends, from its creationTimestamp."""
    expires = Experiment.from_object(setup.get(name)).expires()
    assert expires is not None
    return time.monotonic() + (expires - datetime.now(UTC)).total_seconds()


def test_expiry_reverts(setup: Setup) -> None:
    time_until(setup.file, errno.EIO, setup.create("short", {"faults": EIO_ON_READ, "duration": "4s"}))
    due = expiry_of(setup, "short")
    took = time_until(setup.file, 0, due)
    assert took < TAKES_EFFECT, f"reverting on expiry took {took:.2f}s after it fell due"
    wait_for(lambda: setup.condition("short", "Expired") == "True", what="the Expired condition")
    setup.delete("short")


def test_expiry_holds_while_the_plugin_is_down(setup: Setup) -> None:
    time_until(setup.file, errno.EIO, setup.create("outage", {"faults": EIO_ON_READ, "duration": "4s"}))
    due = expiry_of(setup, "outage")
    process = setup.plugin.process
    assert process is not None
    process.kill()  # SIGKILL: no goodbye; the volume's server runs on, with the resource's faults
    process.wait(timeout=20)
    setup.plugin.process = None
    wait_for(lambda: time.monotonic() > due + 1, timeout=30, what="the resource's expiry, with the plugin down")
    assert read_outcome(setup.file) == errno.EIO  # nobody has reverted it yet
    restarted = time.monotonic()
    setup.plugin.start()
    took = time_until(setup.file, 0, restarted)
    assert took < TAKES_EFFECT + 5, f"reverting after the restart took {took:.2f}s (plugin start included)"
    setup.delete("outage")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"faults": {"rules": [{"match": {"probability": 2}, "action": {"errno": "EIO"}}]}}, "probability"),
        ({"faults": {"rules": [{"match": {"operations": ["reed"]}, "action": {"errno": "EIO"}}]}}, "operations"),
        ({"faults": {"rules": [{"match": {"probabilty": 0.5}, "action": {"errno": "EIO"}}]}}, "probabilty"),
        ({"throttle": {"mode": "drop"}}, "throttle.mode"),
        ({"duration": "soon", "crash": {"enabled": True}}, "spec.duration"),
        ({}, "at least one of faults, throttle, crash"),
    ],
)
def test_a_bad_field_is_refused_by_the_api_server_by_name(setup: Setup, spec: dict[str, Any], field: str) -> None:
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as raised:
        setup.create("bad", spec)
    body = str(raised.value.body)
    assert raised.value.status in (400, 422), body  # 400: an unknown field (strict decoding)
    assert field in body, body


def can_i(cluster: ControlPlane, who: list[str], verb: str, resource: str, namespace: str | None) -> bool:
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    resource, _, subresource = resource.partition("/")
    scope += [f"--subresource={subresource}"] if subresource else []
    result = cluster.kubectl("auth", "can-i", verb, resource, *scope, *who, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {verb} {resource}: {result.stdout}{result.stderr}"
    return answer == "yes"


def test_rbac_node_plugin_reads_and_writes_status_only_editors_run_experiments(setup: Setup) -> None:
    """The chart's rules, applied to the real API server: `kubectl auth can-i` as the node plugin's
    ServiceAccount, as a namespace editor (the built-in edit role, which the experimenter role aggregates to),
    and as a viewer."""
    from tools.gobuild import load

    from .conftest import require
    from .test_kubernetes import by_kind, render

    helm = load()["helm"].path
    require(helm.exists(), f"{helm} (python -m tools.gobuild helm)")
    manifests = render(str(helm), "--set", "podMonitor.enabled=false", "--set", "prometheusRule.enabled=false")
    cluster_wide = [*by_kind(manifests, "ClusterRole"), *by_kind(manifests, "ClusterRoleBinding")]
    cluster = setup.cluster
    cluster.kubectl("create", "namespace", "storage")
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                    "items": [*by_kind(manifests, "ServiceAccount"), *cluster_wide]}))  # fmt: skip
    for name, role in (("alice", "edit"), ("bob", "view")):
        cluster.kubectl("create", "rolebinding", f"{name}-{role}", f"--clusterrole={role}", f"--user={name}",
                        "-n", NAMESPACE)  # fmt: skip
    [node] = [account["metadata"]["name"] for account in by_kind(manifests, "ServiceAccount")
              if account["metadata"]["name"].endswith("-node")]  # fmt: skip
    plugin = [f"--as=system:serviceaccount:storage:{node}"]
    resource = f"{PLURAL}.{GROUP}"
    for verb in ("get", "list", "watch"):
        assert can_i(cluster, plugin, verb, resource, None)
    assert can_i(cluster, plugin, "patch", f"{resource}/status", NAMESPACE)
    # Events: created, and patched to count a repeat up (as client-go's recorder and the kubelet do); never deleted.
    assert can_i(cluster, plugin, "create", "events", NAMESPACE)
    assert can_i(cluster, plugin, "patch", "events", NAMESPACE)
    assert can_i(cluster, plugin, "get", "pods", NAMESPACE)
    for verb, what in (("create", resource), ("update", resource), ("patch", resource), ("delete", resource),
                       ("update", f"{resource}/status"), ("list", "pods"), ("delete", "events"),
                       ("get", "secrets")):  # fmt: skip
        assert not can_i(cluster, plugin, verb, what, NAMESPACE), f"the node plugin may {verb} {what}"
    alice, bob = ["--as=alice"], ["--as=bob"]
    wait_for(lambda: can_i(cluster, alice, "create", resource, NAMESPACE), timeout=30,
             what="the experimenter role aggregated into edit")  # fmt: skip
    for verb in ("get", "list", "watch", "update", "patch", "delete"):
        assert can_i(cluster, alice, verb, resource, NAMESPACE)
    assert not can_i(cluster, alice, "create", resource, "default"), "an editor elsewhere runs no experiment here"
    assert not can_i(cluster, alice, "patch", f"{resource}/status", NAMESPACE), "status is the node plugins'"
    wait_for(lambda: can_i(cluster, bob, "get", resource, NAMESPACE), timeout=30,
             what="the viewer role aggregated into view")  # fmt: skip
    assert not can_i(cluster, bob, "create", resource, NAMESPACE)


def test_a_repeated_event_counts_up_on_one_event(setup: Setup, tmp_path: Path) -> None:
    """A volume that fails at every retry (every 2 s) gives one Warning Event whose count grows, as the
    kubelet's recorder does, not one Event per retry; another message is an Event of its own.  The plugin's
    recorder, against the real API server, with the Pod of the module's setup as the object."""
    from kubernetes import config

    from interposer.csi.live_control import LiveControl
    from interposer.csi.node import NodeRoots, NodeService
    from interposer.csi.plugin import supervisor_for

    roots = NodeRoots(kubelet=tmp_path / "kubelet", host=None, volumes=tmp_path / "volumes", state=tmp_path / "state")
    supervisor = supervisor_for("recorder", roots.state, None, None, 10.0, 1.0, None)
    api_client = config.new_client_from_config(str(setup.cluster.kubeconfig))  # type: ignore[no-untyped-call]
    recorder = LiveControl(NodeService("recorder", roots, supervisor), api_client)
    pod = ("v1", "Pod", "db-0", setup.pod_uid)
    for _ in range(3):
        recorder._event(NAMESPACE, pod, "LiveControlFailed", "Warning", "volume data: the server does not answer")
    recorder._event(NAMESPACE, pod, "LiveControlFailed", "Warning", "volume data: refused")

    events = setup.core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.uid={setup.pod_uid}").items
    failed = {event.message: event.count for event in events if event.reason == "LiveControlFailed"}
    assert failed == {"volume data: the server does not answer": 3, "volume data: refused": 1}
