"""A real Kubernetes control plane for the tests, on 127.0.0.1 only.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, built from their Go modules at the
versions of tools/gobuild.toml (`python -m tools.gobuild etcd kube-apiserver ...`), run as a real cluster runs
them: TLS with client certificates, ``--authorization-mode=Node,RBAC``, the default admission plugins
(PodSecurity among them) and NodeRestriction as kubeadm adds it, ServiceAccount tokens signed with the key
the controller manager is given.  No kubelet and no container runtime: kwok plays the nodes, so pods bound to
its nodes become Ready.  Everything is started and stopped by ``control_plane``; the data and the logs are in
its directory.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from interposer.local.ports import free_port
from tools.gobuild import TOOLS, load

from .conftest import require, wait_for

PROGRAMS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl")
"""The tools/gobuild.toml entries the control plane runs."""
KWOK_STAGES = TOOLS / "kwok" / "stages"
"""The Stages kwok plays (tools/gobuild.toml copies them from kwok's module at its version)."""
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
STARTUP_TIMEOUT = 180.0
"""A cold kube-apiserver on a busy 2-core machine installs its bootstrap RBAC and priority classes slowly."""
IDENTITIES = {
    "admin": "/O=system:masters/CN=interposer-tests-admin",
    "kube-controller-manager": "/CN=system:kube-controller-manager",
    "kube-scheduler": "/CN=system:kube-scheduler",
}
"""Client certificates: the tests and kwok as cluster admins, the controllers as the users that the API
server's bootstrap RBAC binds to their roles."""


def binary(name: str) -> Path:
    """The program built by tools/gobuild; missing, it fails the test in CI and skips it elsewhere."""
    path = load()[name].path
    require(path.exists(), f"{path} (python -m tools.gobuild {name})")
    return path


def kubernetes_version() -> str:
    """The Kubernetes release the tests run: the one tools/gobuild.toml builds kube-apiserver at."""
    return load()["kube-apiserver"].version


def openssl(*arguments: str, cwd: Path) -> None:
    subprocess.run(["openssl", *arguments], cwd=cwd, check=True, capture_output=True, text=True, timeout=60)


def make_certificates(directory: Path) -> None:
    """A CA, the API server's serving certificate, a client certificate per identity, the ServiceAccount key."""
    directory.mkdir()
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=directory)
    openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", "/CN=interposer-tests-ca", "-keyout", "ca.key", "-out", "ca.crt", cwd=directory)  # fmt: skip
    leaves = {
        "apiserver": ("/CN=kube-apiserver", "serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        **{name: (subject, "clientAuth", "") for name, subject in IDENTITIES.items()},
    }
    for name, (subject, usage, names) in leaves.items():
        extensions = directory / f"{name}.ext"
        extensions.write_text(
            f"basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n{names}\n"
        )
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-subj", subject, "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", extensions.name, "-out", f"{name}.crt", cwd=directory)  # fmt: skip


def write_kubeconfig(path: Path, server: str, certificates: Path, identity: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "tests", "cluster": {"server": server, "certificate-authority": str(certificates / "ca.crt")}}
        ],
        "users": [
            {
                "name": identity,
                "user": {
                    "client-certificate": str(certificates / f"{identity}.crt"),
                    "client-key": str(certificates / f"{identity}.key"),
                },
            }
        ],
        "contexts": [{"name": "tests", "context": {"cluster": "tests", "user": identity}}],
        "current-context": "tests",
    }
    path.write_text(yaml.safe_dump(config))


@dataclass
class ControlPlane:
    """A running control plane: its API server's address, an admin kubeconfig, and kubectl against it."""

    directory: Path
    server: str
    kubeconfig: Path
    certificates: Path
    version: str

    def kubectl(
        self, *arguments: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = [str(binary("kubectl")), "--kubeconfig", str(self.kubeconfig), *arguments]
        result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(arguments)}: exit {result.returncode}\n{result.stdout}{result.stderr}"
            )
        return result

    def get(self, *arguments: str) -> Any:
        """``kubectl get ... -o json``, decoded."""
        return json.loads(self.kubectl("get", *arguments, "-o", "json").stdout)

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.certificates / "ca.crt"))
        context.load_cert_chain(self.certificates / "admin.crt", self.certificates / "admin.key")
        return context

    def add_node(self, name: str) -> None:
        """A node that kwok plays, and wait until it is Ready: pods bound to it are then run to Ready."""
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"},
            },
        }
        self.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(node))
        self.kubectl("wait", "--for=condition=Ready", f"node/{name}", "--timeout=60s")


class Processes:
    """The control plane's processes, each logging to its own file; a process that exits is reported."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *arguments: str) -> None:
        with (self.directory / f"{name}.log").open("wb") as log:
            self.running[name] = subprocess.Popen(
                [str(binary(name)), *arguments], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def check(self) -> None:
        """Fail with the log's end of any process that has exited."""
        for name, process in self.running.items():
            if process.poll() is not None:
                tail = (self.directory / f"{name}.log").read_text(errors="replace")[-4000:]
                raise AssertionError(f"{name} exited with {process.returncode}:\n{tail}")

    def stop(self) -> None:
        for process in reversed(self.running.values()):
            process.terminate()
        for process in reversed(self.running.values()):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def control_plane(directory: Path) -> Iterator[ControlPlane]:
    """Start the control plane in ``directory``, wait until it serves, and stop it all on exit."""
    for name in PROGRAMS:
        binary(name)
    require(shutil.which("openssl") is not None, "openssl (the tests' certificates)")
    require(any(KWOK_STAGES.glob("*.yaml")), f"kwok's Stages in {KWOK_STAGES} (python -m tools.gobuild kwok)")
    certificates = directory / "pki"
    make_certificates(certificates)
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{api_port}"
    kubeconfigs = {identity: directory / f"{identity}.kubeconfig" for identity in IDENTITIES}
    for identity, path in kubeconfigs.items():
        write_kubeconfig(path, server, certificates, identity)
    plane = ControlPlane(directory, server, kubeconfigs["admin"], certificates, kubernetes_version())
    processes = Processes(directory)
    with ExitStack() as stack:
        stack.callback(processes.stop)

        def serving(url: str, context: ssl.SSLContext | None = None) -> bool:
            processes.check()
            return http_ok(url, context)

        etcd = f"http://127.0.0.1:{etcd_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        processes.start(
            "etcd", "--name=tests", f"--data-dir={directory / 'etcd'}", "--log-level=warn",
            f"--listen-client-urls={etcd}", f"--advertise-client-urls={etcd}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}", f"--initial-cluster=tests={peer}",
            "--unsafe-no-fsync",  # a test cluster's data dies with it: no fsync on a shared disk
        )  # fmt: skip
        wait_for(lambda: serving(f"{etcd}/health"), timeout=60, what="etcd /health")
        processes.start(
            "kube-apiserver",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            # The kubernetes Service's endpoints may not be loopback, and nothing runs in a pod to reach them.
            "--endpoint-reconciler-type=none",
            f"--etcd-servers={etcd}",
            f"--cert-dir={directory / 'apiserver'}",
            f"--tls-cert-file={certificates / 'apiserver.crt'}",
            f"--tls-private-key-file={certificates / 'apiserver.key'}",
            f"--client-ca-file={certificates / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",  # added to the defaults, as kubeadm does
            "--allow-privileged=true",  # the node plugin's DaemonSet is privileged, as kubeadm's clusters allow
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={certificates / 'sa.pub'}",
            f"--service-account-signing-key-file={certificates / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--profiling=false",
        )  # fmt: skip
        context = plane.ssl_context()
        wait_for(lambda: serving(f"{server}/readyz", context), timeout=STARTUP_TIMEOUT, what="kube-apiserver /readyz")
        processes.start(
            "kube-controller-manager",
            f"--kubeconfig={kubeconfigs['kube-controller-manager']}",
            f"--authentication-kubeconfig={kubeconfigs['kube-controller-manager']}",
            f"--authorization-kubeconfig={kubeconfigs['kube-controller-manager']}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={certificates / 'sa.key'}",
            f"--root-ca-file={certificates / 'ca.crt'}",
            "--profiling=false",
        )  # fmt: skip
        processes.start(
            "kube-scheduler",
            f"--kubeconfig={kubeconfigs['kube-scheduler']}",
            f"--authentication-kubeconfig={kubeconfigs['kube-scheduler']}",
            f"--authorization-kubeconfig={kubeconfigs['kube-scheduler']}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--leader-elect=false",
            "--profiling=false",
        )  # fmt: skip
        processes.start(
            "kwok",
            f"--kubeconfig={kubeconfigs['admin']}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            "--node-ip=127.0.0.1",
            *(f"--config={stage}" for stage in sorted(KWOK_STAGES.glob("*.yaml"))),
        )  # fmt: skip

        account = f"{server}/api/v1/namespaces/default/serviceaccounts/default"
        wait_for(lambda: serving(account, context), timeout=STARTUP_TIMEOUT, what="the default ServiceAccount")
        yield plane
