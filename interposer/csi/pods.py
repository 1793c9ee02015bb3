"""Per-volume server pods: the Kubernetes launcher, and the pod spec it creates.

A volume's server runs in a pod of its own, pinned to the node, outside the
node plugin's DaemonSet: a plugin crash, OOM kill or rollout leaves it running.
Each pod has its own resources, its own logs (``kubectl logs``) and its own
metrics port, which the chart's PodMonitor scrapes by the component label.
The pod is not privileged and holds no CAP_SYS_ADMIN: it is handed an already
mounted /dev/fuse descriptor through the state directory, a hostPath that the
plugin and the pod both mount at the same path.  The pod spec is generated
here, from ``PodSettings`` (rendered by the chart), and the tests validate it
with kubernetes-validate --strict.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import V1Pod
from pydantic import BaseModel, ConfigDict, Field

from ..config import yaml_error
from ..names import K8S_ENVIRONMENT, RESOURCE_K8S_NODE
from .launcher import ServerSpec, server_arguments
from .state import Publication, key_of

log = logging.getLogger(__name__)

COMPONENT = "volume-server"
COMPONENT_LABEL = "app.kubernetes.io/component"
NAME_PREFIX = "interposer-server-"
METRICS_PORT_NAME = "metrics"
CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "MKNOD")
"""What a passthrough server does to the backing files as root: never SYS_ADMIN."""
TRACE_CALLER_CAPABILITIES = ("SYS_PTRACE",)
"""What reading another user's /proc/<pid>/environ needs (ptrace access mode READ_FSCREDS)."""


class HostMount(BaseModel):
    """A host directory the plugin sees at ``mount_path``: the server pods see what they need of it there too."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    host_path: str = Field(pattern=r"^/")
    mount_path: str = Field(pattern=r"^/")


class PodSettings(BaseModel):
    """What every server pod is made of; the chart writes this file from its values."""

    model_config = ConfigDict(extra="forbid")
    namespace: str
    image: str
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: list[dict[str, str]] = []
    service_account: str
    labels: dict[str, str] = {}
    mounts: list[HostMount]
    """The plugin's host directories: the state directory and every root backing directories lie in."""
    metrics_port: int = Field(9464, ge=1, le=65535)
    resources: dict[str, Any] = {}
    priority_class: str | None = None
    environment: dict[str, str] = {}
    """Telemetry settings for the servers: OTEL_EXPORTER_OTLP_ENDPOINT and the like."""
    delete_timeout: float = Field(60.0, gt=0)
    trace_callers: bool = False
    """Let the server read callers' TRACEPARENT: the host's pid namespace (where the plugin mounted, so where
    FUSE reports callers' pids) and CAP_SYS_PTRACE, which /proc/<pid>/environ of another user's process needs."""

    @classmethod
    def load(cls, path: Path) -> PodSettings:
        try:
            return cls.model_validate(yaml.safe_load(path.read_text()))
        except yaml.YAMLError as exc:
            raise ValueError(f"--server-pods {yaml_error(path, exc)}") from None
        except (OSError, ValueError) as exc:
            raise ValueError(f"--server-pods {path}: {exc}") from None


def pod_name(key: str) -> str:
    return NAME_PREFIX + key


def pod_body(manifest: dict[str, Any]) -> V1Pod:
    """The manifest as the client's own model: a field it does not know is an error here, not on the server."""
    body = V1Pod.from_dict(manifest)
    if body is None:
        raise ValueError("empty pod manifest")
    return body


def host_path(path: Path, mounts: list[HostMount]) -> str:
    """Where the host keeps what the plugin sees at ``path``."""
    for mount in mounts:
        if path.is_relative_to(mount.mount_path):
            return str(Path(mount.host_path) / path.relative_to(mount.mount_path))
    roots = ", ".join(mount.mount_path for mount in mounts)
    raise RuntimeError(f"{path} is in none of the plugin's host directories in --server-pods ({roots})")


def server_pod(spec: ServerSpec, settings: PodSettings, node: str) -> dict[str, Any]:
    """The pod of one volume's server, as a Kubernetes manifest.

    It mounts three host directories and nothing else: the volume's backing
    directory, the directory of its config and span files, and the one of its
    handover and control sockets; never the driver's records or other volumes.
    """
    labels = {**settings.labels, COMPONENT_LABEL: COMPONENT}
    directories = {"backing": spec.backing, "files": spec.config.parent, "sockets": spec.handover.parent}
    environment = {
        **settings.environment,
        **spec.environment,
        K8S_ENVIRONMENT[RESOURCE_K8S_NODE]: node,
        "OTEL_EXPORTER_PROMETHEUS_HOST": "0.0.0.0",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(settings.metrics_port),
    }
    # One path per signal: the pod declares the metrics port the chart's PodMonitor scrapes, and its metrics go
    # there only, even with the OTLP endpoint its spans use (which alone would make OTLP the only exporter, the
    # port closed; both would bring every series twice, under the PodMonitor's job and the collector's).  The
    # scrape also reports the spans dropped when the collector fails, which OTLP would lose with it.
    environment.setdefault("OTEL_METRICS_EXPORTER", "prometheus")
    container: dict[str, Any] = {
        "name": "server",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": server_arguments(spec, None),
        "env": [{"name": name, "value": value} for name, value in sorted(environment.items())],
        "ports": [{"name": METRICS_PORT_NAME, "containerPort": settings.metrics_port, "protocol": "TCP"}],
        "securityContext": {
            "runAsUser": 0,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {
                "drop": ["ALL"],
                "add": [*CAPABILITIES, *(TRACE_CALLER_CAPABILITIES if settings.trace_callers else ())],
            },
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": name, "mountPath": str(path)} for name, path in directories.items()],
    }
    if settings.resources:
        container["resources"] = settings.resources
    pod_spec: dict[str, Any] = {
        "nodeName": node,
        "restartPolicy": "Never",
        "serviceAccountName": settings.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "tolerations": [{"operator": "Exists"}],
        "containers": [container],
        "volumes": [
            {"name": name, "hostPath": {"path": host_path(path, settings.mounts), "type": "Directory"}}
            for name, path in directories.items()
        ],
    }
    if settings.trace_callers:
        pod_spec["hostPID"] = True
    if settings.priority_class:
        pod_spec["priorityClassName"] = settings.priority_class
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = settings.image_pull_secrets
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name(spec.key), "namespace": settings.namespace, "labels": labels},
        "spec": pod_spec,
    }


class PodLauncher:
    """Servers as pods, made and deleted with the official Kubernetes client.

    ``api_client`` holds the plugin's credentials (in-cluster, or --kubeconfig): the same ones live control
    uses, so one ServiceAccount's rules cover both.
    """

    poll_interval = 0.5

    def __init__(self, settings: PodSettings, node: str, state_dir: Path, api_client: Any) -> None:
        from kubernetes import client

        self.api = client.CoreV1Api(api_client)
        self.settings = settings
        self.node = node
        self.sockets_dir = state_dir / "servers"
        self.sockets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def sockets(self, target: Path, key: str) -> tuple[Path, Path]:
        return self.sockets_dir / f"{key}.handover.sock", self.sockets_dir / f"{key}.control.sock"

    def launch(self, spec: ServerSpec, publication: Publication) -> Publication:
        from kubernetes.client.exceptions import ApiException

        name = pod_name(spec.key)
        body = pod_body(server_pod(spec, self.settings, self.node))
        try:
            self.api.create_namespaced_pod(self.settings.namespace, body)
        except ApiException as exc:
            where = f"{self.settings.namespace}/{name}"
            raise RuntimeError(f"cannot create pod {where}: {exc.status} {exc.reason}") from None
        log.info("created pod %s/%s for %s", self.settings.namespace, name, spec.target)
        return publication.model_copy(update={"pod": name, "pid": None, "start_time": None, "cgroup": None})

    def gone(self, publication: Publication) -> str | None:
        from kubernetes.client.exceptions import ApiException

        if publication.pod is None:
            return "no server pod is recorded"
        try:
            pod = self.api.read_namespaced_pod(publication.pod, self.settings.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return f"the server pod {publication.pod} is gone"
            return None  # the API server is unreachable: nothing is known to be wrong with the volume
        status = pod.status
        if status is not None and status.phase in ("Succeeded", "Failed"):
            return f"the server pod {publication.pod} has ended ({status.phase}): {status.reason or status.message}"
        return None

    def stop(self, publication: Publication, timeout: float) -> None:
        from kubernetes.client.exceptions import ApiException

        name = pod_name(key_of(publication.target_path))  # also a pod launched before the plugin could record it
        try:
            self.api.delete_namespaced_pod(name, self.settings.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise RuntimeError(f"cannot delete pod {name}: {exc.status} {exc.reason}") from None
        deadline = time.monotonic() + max(timeout, self.settings.delete_timeout)
        while time.monotonic() < deadline:
            try:
                self.api.read_namespaced_pod(name, self.settings.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return
            time.sleep(self.poll_interval)
        raise TimeoutError(f"pod {name} still exists {timeout}s after its deletion")
