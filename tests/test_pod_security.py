"""Pod security, judged by the API server's own PodSecurity admission (tests/kube.py), in ``warn`` mode.

A volume's server pod, as interposer.csi.pods makes it from the settings the chart renders, is created through
the API in a namespace labelled ``pod-security.kubernetes.io/warn: baseline``: the warnings the server returns
are the Pod Security Standards it breaks, each named.  By default it breaks baseline only by the hostPath
volumes it needs and by the capabilities the passthrough needs beyond baseline's list; tracing callers adds
the host's pid namespace and CAP_SYS_PTRACE.  Of the chart's workloads, only the node plugin is privileged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from interposer.csi.pods import CAPABILITIES, TRACE_CALLER_CAPABILITIES, server_pod

from .kube import ControlPlane, binary
from .test_csi_pods import settings_of, spec
from .test_kubernetes import by_kind, render

LEVEL = "baseline"
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD"}
BASELINE_CAPABILITIES |= {"NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
"""The Pod Security Standards' baseline list of capabilities a container may add (kubernetes.io, "Pod
Security Standards", Capabilities): the passthrough's DAC_READ_SEARCH is not in it; open_by_handle_at, which
reopens a backing file by its kernel handle (interposer.backends.syscalls), needs it."""
WARNING = re.compile(r'^Warning: would violate PodSecurity "(?P<level>[a-z]+):latest": (?P<items>.*)$')


def namespace(cluster: ControlPlane, name: str) -> str:
    """A namespace whose pods PodSecurity admission checks against baseline, and warns of."""
    labels = {"pod-security.kubernetes.io/warn": LEVEL, "pod-security.kubernetes.io/warn-version": "latest"}
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(manifest))
    return name


def violations(stderr: str) -> set[str]:
    """The server's PodSecurity warnings, one item per broken control: `hostPath volumes (volumes "a", "b")`."""
    found: set[str] = set()
    for line in stderr.splitlines():
        match = WARNING.match(line)
        if match:
            assert match["level"] == LEVEL
            found |= {item if item.endswith(")") else item + ")" for item in match["items"].split("), ")}
    return found


def capability_warning(container: str, capabilities: set[str]) -> str:
    names = ", ".join(f'"{name}"' for name in sorted(capabilities))
    where = "in securityContext.capabilities.add"
    return f'non-default capabilities (container "{container}" must not include {names} {where})'


@pytest.mark.parametrize("trace_callers", [False, True])
def test_a_server_pod_breaks_baseline_only_by_its_host_paths_and_named_capabilities(
    cluster: ControlPlane, trace_callers: bool
) -> None:
    manifests = render(str(binary("helm")), "--set", f"telemetry.traceCallers={str(trace_callers).lower()}")
    name = namespace(cluster, f"servers-{str(trace_callers).lower()}")
    settings = settings_of(manifests).model_copy(update={"namespace": name})
    cluster.kubectl("create", "serviceaccount", settings.service_account, "-n", name)
    manifest = server_pod(spec("/var/lib/cnfs-interposer/volumes/web"), settings, "kwok-node-0")
    created = cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
    host_paths = sorted(volume["name"] for volume in manifest["spec"]["volumes"])
    beyond = set(CAPABILITIES) - BASELINE_CAPABILITIES
    expected = {"hostPath volumes (volumes " + ", ".join(f'"{volume}"' for volume in host_paths) + ")"}
    if trace_callers:
        expected.add("host namespaces (hostPID=true)")
        beyond |= set(TRACE_CALLER_CAPABILITIES)
    expected.add(capability_warning("server", beyond))
    assert violations(created.stderr) == expected, created.stderr
    assert beyond == {"DAC_READ_SEARCH", *(TRACE_CALLER_CAPABILITIES if trace_callers else ())}
    cluster.kubectl("delete", "pod", manifest["metadata"]["name"], "-n", name, "--wait=false")


def test_only_the_node_plugin_is_privileged(cluster: ControlPlane, tmp_path: Path) -> None:
    """Each of the chart's workloads, checked by the server (a dry run) in a namespace that warns of baseline."""
    name = namespace(cluster, "workloads")
    manifests = render(str(binary("helm")))
    privileged = {}
    for rendered in by_kind(manifests, "DaemonSet") + by_kind(manifests, "Deployment"):
        workload = {**rendered, "metadata": {**rendered["metadata"], "namespace": name}}
        path = tmp_path / f"{workload['kind']}.yaml"
        path.write_text(yaml.safe_dump(workload))
        result = cluster.kubectl("create", "--dry-run=server", "-f", str(path))
        privileged[workload["kind"]] = any(item.startswith("privileged") for item in violations(result.stderr))
        containers = workload["spec"]["template"]["spec"]["containers"]
        flagged = {c["name"] for c in containers if c.get("securityContext", {}).get("privileged")}
        assert privileged[workload["kind"]] == bool(flagged), result.stderr
    assert privileged == {"DaemonSet": True, "Deployment": False}
