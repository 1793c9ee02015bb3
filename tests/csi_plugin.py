"""The CSI plugin as a real process serving gRPC on a unix socket, and a client that speaks the spec's methods."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
from google.protobuf.message import Message

from interposer.control import runtime_path_for
from interposer.csi import csi_pb2
from interposer.csi.state import Publication, RecordStore
from interposer.csi.supervisor import Supervisor

from .conftest import wait_for


class CsiPlugin:
    """``interposer csi`` with its directories under ``root``: kubelet, host root, volumes and state."""

    def __init__(self, root: Path, *extra: str, program: Sequence[str] = (sys.executable, "-m", "interposer")) -> None:
        """``program`` is the command line that runs ``interposer``: this checkout's by default."""
        self.root = root
        self.program = list(program)
        self.socket = root / "plugin" / "csi.sock"
        self.kubelet = root / "kubelet"
        self.host = root / "host"
        self.state = root / "state"
        self.volumes = root / "volumes"
        self.extra = extra
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
            *self.extra,
        ]  # fmt: skip
        log = (self.root / "plugin.log").open("ab")
        # Run outside the checkout, so `python -m interposer` finds the package it was installed with.
        self.process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=self.root)
        log.close()
        wait_for(self._ready, timeout=20, what="the CSI plugin's socket to answer Probe")
        return self

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

    def interposer_files(self, publication: Publication) -> tuple[Path, Path, Path]:
        """The config, log and span files the plugin keeps for a publication."""
        return Supervisor(self.state / "interposers", ready_timeout=1).files(publication.target_path)

    def publications(self) -> list[Publication]:
        return list(RecordStore(self.state / "publications", Publication))

    def cleanup(self) -> None:
        """Stop the plugin and whatever interposers a failed test left running."""
        self.stop()
        supervisor = Supervisor(self.state / "interposers", ready_timeout=1)
        for publication in self.publications():
            supervisor.stop(publication)
            for suffix in (".sock", ".spans.jsonl", ".spans.jsonl.1"):
                runtime_path_for(publication.target_path, suffix).unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()
