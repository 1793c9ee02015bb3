"""The control socket of a running mount: one JSON request per line, one JSON reply per line.

The socket is a unix socket with mode 0600 in a directory of mode 0700, so
only its owner (normally root) can reconfigure the mount.  Its path is derived
from the mountpoint, so ``interposer ctl MOUNTPOINT`` finds it without help.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from .table import is_stale, mount_at

log = logging.getLogger(__name__)

INTERPOSER_FSTYPE = "fuse.interposer"
"""The file-system type of an interposer mount in the mount table (FUSE type, subtype=interposer)."""

Command = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
_MAX_REQUEST = 1 << 20


def runtime_dir() -> Path:
    """Where control sockets live: /run/interposer for root, else under XDG_RUNTIME_DIR."""
    if os.geteuid() == 0:
        return Path("/run/interposer")
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/interposer-{os.geteuid()}"
    return Path(base) / "interposer"


def runtime_path_for(mountpoint: str | os.PathLike[str], suffix: str) -> Path:
    """A per-mount file in the runtime directory, named by a hash of the mountpoint (socket paths are short)."""
    digest = hashlib.sha256(os.path.abspath(mountpoint).encode()).hexdigest()[:24]
    return runtime_dir() / f"{digest}{suffix}"


def socket_path_for(mountpoint: str | os.PathLike[str]) -> Path:
    """The default control socket of a mountpoint."""
    return runtime_path_for(mountpoint, ".sock")


class ControlServer:
    """Serves commands on a unix socket inside the mount's trio nursery."""

    def __init__(self, path: Path, commands: dict[str, Command]) -> None:
        self.path = path
        self.commands = commands

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            await listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        listener.listen(16)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                await trio.serve_listeners(self._handle, [trio.SocketListener(listener)], handler_nursery=nursery)
        finally:
            self.path.unlink(missing_ok=True)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        async with stream:
            buffer = b""
            while b"\n" not in buffer and len(buffer) < _MAX_REQUEST:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                buffer += chunk
            reply = await self._dispatch(buffer.split(b"\n", 1)[0])
            await stream.send_all(json.dumps(reply).encode() + b"\n")

    async def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not valid JSON"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "request must be a JSON object"}
        name = request.get("command")
        command = self.commands.get(name) if isinstance(name, str) else None
        if command is None:
            return {"ok": False, "error": f"unknown command {name!r}; allowed: {', '.join(sorted(self.commands))}"}
        try:
            return {"ok": True, **await command(request)}
        except Exception as exc:
            log.exception("control command %s failed", name)
            return {"ok": False, "error": str(exc)}


def request(path: Path, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one command to a mount's control socket and return its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


_LIST_MOUNTS = f"'findmnt -t {INTERPOSER_FSTYPE}'"
"""How a user finds the running interposer mounts: the next step when a path given to ctl is not one."""


class NotAMountError(RuntimeError):
    """The path given is no running interposer mount, so it has no control socket to ask: a usage error."""


class NoAnswerError(RuntimeError):
    """The mount is there but its control socket does not answer."""


def ask(mountpoint: Path, socket_path: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """Send one command to the mount at ``mountpoint``; an error says what is wrong with the mount, not the socket."""
    if is_stale(mountpoint):
        raise NotAMountError(
            f"{mountpoint} is a stale FUSE mount: the process that served it is gone (Transport endpoint is not "
            f"connected); clear it with 'interposer unmount --force {mountpoint}'"
        )
    try:
        mountpoint.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise NotAMountError(
            f"{mountpoint} does not exist: check the path ({_LIST_MOUNTS} lists the interposer mounts)"
        ) from None
    entry = mount_at(mountpoint)
    if entry is None:
        raise NotAMountError(
            f"{mountpoint} is not a mount: nothing is mounted there (mount it with 'interposer mount BACKING "
            f"{mountpoint}', or find the running ones with {_LIST_MOUNTS})"
        )
    if entry.fstype != INTERPOSER_FSTYPE:
        raise NotAMountError(
            f"{mountpoint} is a {entry.fstype} mount of {entry.source}, not an interposer mount ({_LIST_MOUNTS} "
            "lists those)"
        )
    try:
        return request(socket_path, payload)
    except OSError as exc:
        raise NoAnswerError(
            f"the interposer mount at {mountpoint} does not answer on {socket_path}: {exc.strerror or exc} "
            "(mounted by another user, or with control.socket set? then pass --socket)"
        ) from None
