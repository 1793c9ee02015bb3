"""Least privilege, proven against a real API server (tests/kube.py).

The chart is rendered with helm and applied with kubectl; then, for every ServiceAccount it creates,
``kubectl auth can-i --as=system:serviceaccount:NS:NAME`` shows that each verb the account needs is allowed
and that a list of verbs it must never have is denied.  What the node plugin needs is read from its code
(the Kubernetes client calls in interposer/), so a new call without its rule fails here, not in a cluster.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType

import pytest
import yaml

from .kube import ControlPlane, binary
from .test_kubernetes import ROOT, by_kind, render

NAMESPACE = "storage"
"""test_kubernetes.render's namespace, where the chart's namespaced objects go."""
OTHER_NAMESPACE = "default"
EXPERIMENTS = "volumeexperiments.cnfs-interposer.io"
PROVISIONER_IMAGE = "registry.k8s.io/sig-storage/csi-provisioner:v5.2.0"
"""The sidecar whose rules PROVISIONER_NEEDS records: a new tag means reading its rbac.yaml again."""


@dataclass(frozen=True)
class Access:
    """One `kubectl auth can-i` question: a verb on a resource, in a namespace or cluster-wide (None)."""

    verb: str
    resource: str
    namespace: str | None = NAMESPACE

    def __str__(self) -> str:
        where = f"-n {self.namespace}" if self.namespace else "cluster-wide"
        return f"{self.verb} {self.resource} {where}"


CLIENT_VERBS = {"create": "create", "read": "get", "get": "get", "list": "list", "watch": "watch"}
CLIENT_VERBS |= {"patch": "patch", "replace": "update", "delete": "delete"}
"""The official client's method prefixes (create_namespaced_pod, read_..., get_..._custom_object) and the API
verbs they use."""
OWN_NAMESPACE = "settings.namespace"
"""How the launcher names the namespace it was configured with (the chart's release namespace); a namespaced
call given any other namespace may address every namespace, so it needs its rule cluster-wide."""


def name_of(node: ast.expr) -> str | None:
    """``api`` for both ``api`` and ``self.api``."""
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else None


def argument(call: ast.Call, name: str, position: int, module: ModuleType) -> str:
    """A call's argument as source text, or as the value of the module's constant it names (GROUP, PLURAL)."""
    given = [keyword.value for keyword in call.keywords if keyword.arg == name] or call.args[position : position + 1]
    assert given, f"{ast.unparse(call)}: no {name}"
    [node] = given
    if isinstance(node, ast.Name) and isinstance(getattr(module, node.id, None), str):
        value: str = getattr(module, node.id)
        return value
    return ast.unparse(node)


def access_of(method: str, call: ast.Call, offset: int, module: ModuleType) -> set[Access]:
    """The API access one client method makes (``offset``: arguments before the method's own, in a watch)."""
    action, _, kind = method.partition("_")
    verbs = {CLIENT_VERBS[action]}
    if offset:  # watch.Watch().stream(api.list_..., ...): the list's watch
        verbs = {"watch"}
    if kind.endswith("custom_object") or kind.endswith("custom_object_status"):
        plural = argument(call, "plural", offset + (3 if "namespaced" in kind else 2), module)
        resource = f"{plural}.{argument(call, 'group', offset, module)}" + ("/status" if "status" in kind else "")
        where = argument(call, "namespace", offset + 2, module) if "namespaced" in kind else None
    else:
        resource = kind.removeprefix("namespaced_") + "s"
        where = None
        if kind.startswith("namespaced_"):
            where = argument(call, "namespace", offset + (0 if action in ("create", "list") else 1), module)
    namespace = NAMESPACE if where is not None and where.endswith(OWN_NAMESPACE) else None
    return {Access(verb, resource, namespace) for verb in verbs}


def client_calls() -> set[Access]:
    """What the interposer's own code asks of the API: every method of a kubernetes client (``CoreV1Api()``,
    ``CustomObjectsApi()``) called, or watched through ``watch.Watch().stream``, on a name the client was
    assigned to, as the verb on its resource, in the release's namespace or in any."""
    needs = set()
    for path in sorted((ROOT / "interposer").rglob("*.py")):
        tree = ast.parse(path.read_text())
        clients = {
            name_of(target)
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
            and (name_of(node.value.func) or "").endswith("Api")
            for target in node.targets
        }  # fmt: skip
        if not clients:
            continue
        module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            if isinstance(node.func, ast.Attribute) and name_of(node.func.value) in clients:
                needs |= access_of(node.func.attr, node, 0, module)
            elif isinstance(node.func, ast.Attribute) and node.func.attr == "stream" and node.args:
                watched = node.args[0]
                if isinstance(watched, ast.Attribute) and name_of(watched.value) in clients:
                    needs |= access_of(watched.attr, node, 1, module)
    return needs


PROVISIONER_NEEDS = {
    *(Access(verb, "persistentvolumes", None) for verb in ("get", "list", "watch", "create", "patch", "delete")),
    *(Access(verb, "persistentvolumeclaims", None) for verb in ("get", "list", "watch", "update")),
    *(Access(verb, "persistentvolumeclaims", OTHER_NAMESPACE) for verb in ("get", "list", "watch", "update")),
    *(Access(verb, "storageclasses.storage.k8s.io", None) for verb in ("get", "list", "watch")),
    *(Access(verb, "csinodes.storage.k8s.io", None) for verb in ("get", "list", "watch")),
    *(Access(verb, "nodes", None) for verb in ("get", "list", "watch")),
    *(Access(verb, "events", OTHER_NAMESPACE) for verb in ("list", "watch", "create", "update", "patch")),
    *(Access(verb, "leases.coordination.k8s.io") for verb in ("get", "watch", "list", "delete", "update", "create")),
}
"""csi-provisioner's deploy/kubernetes/rbac.yaml at PROVISIONER_IMAGE's tag, less what it marks optional and
this driver does not use: secrets (no provisioning secrets), volumeattachments (no PUBLISH_UNPUBLISH_VOLUME),
snapshots (no snapshot capability), referencegrants (no cross-namespace data sources), CSIStorageCapacity
and the Pod/ReplicaSet reads of its owner chain (no --enable-capacity).  PersistentVolume patch is not
optional: HonorPVReclaimPolicy, on by default since v4, removes the provisioner's finalizer by a patch."""

NEEDS = {"node": client_calls(), "controller": PROVISIONER_NEEDS, "volume-server": set()}
"""Per account (the chart names them <fullname>-<role>): what each must be allowed."""

POD_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
MUST_NOT = {
    *(Access(verb, "secrets") for verb in ("get", "list", "watch")),
    Access("list", "secrets", None),
    Access("get", "secrets", "kube-system"),
    *(Access(verb, "pods") for verb in POD_VERBS),  # a role that needs some of these has them in NEEDS
    *(Access(verb, "pods", OTHER_NAMESPACE) for verb in ("get", "create", "delete")),
    *(Access(verb, "pods", "kube-system") for verb in ("get", "create", "delete")),
    Access("list", "pods", None),
    *(Access(verb, resource) for verb in ("create", "get") for resource in ("pods/exec", "pods/attach")),
    Access("create", "pods/portforward"),
    Access("create", "pods/eviction"),
    *(Access(verb, "nodes", None) for verb in ("create", "update", "patch", "delete")),
    Access("patch", "nodes/status", None),
    Access("create", "serviceaccounts/token"),
    Access("create", "serviceaccounts/token", "kube-system"),
    *(Access(verb, "configmaps") for verb in ("create", "update", "patch", "delete")),
    Access("create", "roles.rbac.authorization.k8s.io"),
    Access("create", "rolebindings.rbac.authorization.k8s.io"),
    Access("create", "clusterrolebindings.rbac.authorization.k8s.io", None),
    Access("escalate", "roles.rbac.authorization.k8s.io"),
    Access("bind", "clusterroles.rbac.authorization.k8s.io", None),
    Access("impersonate", "users", None),
    Access("impersonate", "serviceaccounts"),
    Access("update", "persistentvolumes", None),
    Access("create", "customresourcedefinitions.apiextensions.k8s.io", None),
    Access("create", "daemonsets.apps"),
    Access("update", "csidrivers.storage.k8s.io", None),
    Access("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io", None),
}
"""What no account of the chart may do (less what NEEDS grants one of them): read secrets, touch pods elsewhere,
exec into pods, patch nodes, mint tokens, grant itself more, impersonate, install webhooks or CRDs."""


def covered(access: Access, needs: set[Access]) -> bool:
    """A need covers the same question, and a cluster-wide need covers it in every namespace."""
    return access in needs or Access(access.verb, access.resource, None) in needs


def can_i(cluster: ControlPlane, account: str, access: Access) -> bool:
    """`kubectl auth can-i` as the ServiceAccount, through impersonation, as a user would ask it."""
    scope = ["-n", access.namespace] if access.namespace else ["--all-namespaces"]
    resource, _, subresource = access.resource.partition("/")  # RESOURCE/NAME would name one object
    result = cluster.kubectl(
        "auth", "can-i", access.verb, resource, *([f"--subresource={subresource}"] if subresource else []),
        *scope, f"--as=system:serviceaccount:{NAMESPACE}:{account}",
        check=False,
    )  # fmt: skip
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {access} as {account}: {result.stdout}{result.stderr}"
    assert "Warning" not in result.stderr, f"can-i {access}: {result.stderr}"  # an unknown resource is a warning
    return answer == "yes"


@pytest.fixture(scope="module")
def applied(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The chart with its defaults, applied server-side; the ServiceAccounts it made, by role."""
    manifests = render(
        str(binary("helm")),
        "--include-crds",
        "--set",
        "podMonitor.enabled=false",
        "--set",
        "prometheusRule.enabled=false",
    )
    path = tmp_path_factory.mktemp("rbac") / "chart.yaml"
    path.write_text(yaml.safe_dump_all(manifests))
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    # applied, not created: test_live_control's RBAC check made it earlier in the same session
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=interposer-tests", "-f", "-", input=yaml.safe_dump(namespace)
    )
    cluster.kubectl("apply", "--server-side", "--field-manager=interposer-tests", "-f", str(path))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{EXPERIMENTS}", "--timeout=60s")
    [deployment] = by_kind(manifests, "Deployment")
    images = {container["image"] for container in deployment["spec"]["template"]["spec"]["containers"]}
    assert PROVISIONER_IMAGE in images, f"the provisioner is now one of {images}: read its rbac.yaml again"
    accounts = {}
    for account in by_kind(manifests, "ServiceAccount"):
        name = account["metadata"]["name"]
        roles = [role for role in NEEDS if name.endswith(f"-{role}")]
        assert roles, f"the chart makes ServiceAccount {name}: add what it needs to NEEDS"
        accounts[roles[0]] = name
    assert set(accounts) == set(NEEDS), accounts
    yield accounts
    cluster.kubectl("delete", "--wait=false", "--ignore-not-found", "-f", str(path))
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false")


def test_the_node_plugins_needs_are_read_from_its_code() -> None:
    """The reader finds the launcher's calls (in its own namespace) and live control's (in any, and watched)."""
    launcher = {Access(verb, "pods") for verb in ("create", "get", "delete")}
    live_control = {Access("watch", EXPERIMENTS, None), Access("patch", f"{EXPERIMENTS}/status", None)}
    assert launcher | live_control <= client_calls()


@pytest.mark.parametrize("role", sorted(NEEDS))
def test_each_account_can_do_what_it_needs_and_nothing_on_the_forbidden_list(
    cluster: ControlPlane, applied: dict[str, str], role: str
) -> None:
    account = applied[role]
    needs = NEEDS[role]
    must_not = {access for access in MUST_NOT if not covered(access, needs)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        allowed = dict(zip(needs, pool.map(lambda access: can_i(cluster, account, access), needs), strict=True))
        denied = dict(
            zip(must_not, pool.map(lambda access: not can_i(cluster, account, access), must_not), strict=True)
        )
    missing = sorted(str(access) for access, ok in allowed.items() if not ok)
    excess = sorted(str(access) for access, ok in denied.items() if not ok)
    assert not missing, f"{account} lacks what it needs: {missing}"
    assert not excess, f"{account} may do what it must not: {excess}"
