"""The CSI plugin as a real process serving gRPC on a unix socket, and a client that speaks the spec's methods."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
from google.protobuf.message import Message

from interposer.csi import csi_pb2
from interposer.csi.launcher import LocalLauncher
from interposer.csi.state import Publication, RecordStore
from interposer.csi.supervisor import Supervisor
from interposer.mount.control import runtime_path_for

from .conftest import wait_for


class CsiPlugin:
    """``interposer csi`` with its directories under ``root``: kubelet, host root, volumes and state.

    With ``cgroup`` the plugin runs in that cgroup v2 directory, as a container
    would, and ``server_cgroup`` is where it puts the volumes' servers.
    ``program`` is the command line that runs ``interposer``: this checkout's by default, another install's
    for an upgrade or a wheel;
    ``env`` adds variables to its environment, which its servers inherit.
    """

    def __init__(
        self,
        root: Path,
        *extra: str,
        cgroup: Path | None = None,
        server_cgroup: Path | None = None,
        program: Sequence[str] = (sys.executable, "-m", "interposer"),
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.program = list(program)
        self.socket = root / "plugin" / "csi.sock"
        self.kubelet = root / "kubelet"
        self.host = root / "host"
        self.state = root / "state"
        self.volumes = root / "volumes"
        self.extra = extra
        self.cgroup = cgroup
        self.server_cgroup = server_cgroup
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        for directory in (self.kubelet, self.host):
            directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> Self:
        command = [
            *self.program, "csi",
            "--endpoint", f"unix://{self.socket}",
            "--node-id", "node-a",
            "--state-dir", str(self.state),
            "--kubelet-dir", str(self.kubelet),
            "--host-root", str(self.host),
            "--volumes-root", str(self.volumes),
            "--probe-timeout", "1",
            *(["--server-cgroup", str(self.server_cgroup)] if self.server_cgroup else []),
            *self.extra,
        ]  # fmt: skip
        if self.cgroup is not None:  # join the cgroup first, as a container's first process is in it
            command = ["sh", "-c", f'echo $$ > {self.cgroup}/cgroup.procs && exec "$@"', "sh", *command]
        log = (self.root / "plugin.log").open("ab")
        env = None if self.env is None else {**os.environ, **self.env}
        self.process = subprocess.Popen(  # not in the repository: ``python -m`` would import it from there
            command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, cwd=self.root
        )
        log.close()
        wait_for(self._ready, timeout=20, what="the CSI plugin's socket to answer Probe")
        return self

    def kill_cgroup(self) -> None:
        """Kill every process of the plugin's cgroup at once (cgroup.kill), as a container's end does."""
        cgroup, process = self.cgroup, self.process
        assert cgroup is not None
        assert process is not None
        (cgroup / "cgroup.kill").write_text("1\n")
        process.wait(timeout=20)
        self.process = None
        wait_for(lambda: not (cgroup / "cgroup.procs").read_text().strip(), what="an empty plugin cgroup")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"plugin exited with {self.process.returncode}: {self.log()}")
        if not self.socket.exists():
            return False
        try:
            self.call("Identity", "Probe", csi_pb2.ProbeRequest())
        except grpc.RpcError:
            return False
        return True

    def stop(self) -> int:
        """SIGTERM, as kubelet does on a plugin restart: the volumes stay mounted."""
        if self.process is None:
            return 0
        self.process.terminate()
        code = self.process.wait(timeout=20)
        self.process = None
        return code

    def log(self) -> str:
        return (self.root / "plugin.log").read_text(errors="replace")[-4000:]

    def call(self, service: str, method: str, request: Message) -> Any:
        """One RPC over a fresh channel, by the method's full name, as kubelet and the sidecars call it."""
        output = csi_pb2.DESCRIPTOR.services_by_name[service].methods_by_name[method].output_type
        with grpc.insecure_channel(f"unix://{self.socket}") as channel:
            stub = channel.unary_unary(
                f"/csi.v1.{service}/{method}",
                request_serializer=type(request).SerializeToString,
                response_deserializer=getattr(csi_pb2, output.name).FromString,
            )
            return stub(request, timeout=60)

    def supervisor(self) -> Supervisor:
        """A supervisor over the plugin's state, as the plugin itself builds it."""
        launcher = LocalLauncher(self.server_cgroup)
        return Supervisor(self.state / "interposers", launcher, ready_timeout=1, probe_timeout=1, stop_timeout=5)

    def interposer_files(self, publication: Publication) -> tuple[Path, Path, Path]:
        """The config, log and span files the plugin keeps for a publication."""
        return self.supervisor().files(publication.target_path)

    def publications(self) -> list[Publication]:
        return list(RecordStore(self.state / "publications", Publication))

    def cleanup(self) -> None:
        """Stop the plugin and whatever servers a failed test left running."""
        self.stop()
        supervisor = self.supervisor()
        for publication in self.publications():
            supervisor.stop(publication)
            for suffix in (".sock", ".handover.sock"):
                runtime_path_for(publication.target_path, suffix).unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()
