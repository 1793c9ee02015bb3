"""Handing a mounted /dev/fuse descriptor to a volume's server over a unix socket (SCM_RIGHTS).

The server listens on its handover socket before the plugin mounts anything;
the plugin connects, sends one message carrying the descriptor, and closes its
copy.  The socket lives in a directory both can reach: the plugin's state
directory locally, a hostPath shared with the server's pod in Kubernetes.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

MESSAGE = b"fuse"
"""The payload that goes with the descriptor, so a stray connection is told apart."""


def listen(path: Path) -> socket.socket:
    """The server's listening socket (only its owner may connect), in a private directory made if missing.

    The local launcher's sockets live in the runtime directory, which nothing
    may have made yet on a fresh machine or in a fresh container.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o600)
    server.listen(1)
    return server


def receive(server: socket.socket, timeout: float) -> int:
    """Wait for the descriptor; raises TimeoutError when none comes in time."""
    server.settimeout(timeout)
    try:
        connection, _ = server.accept()
    except TimeoutError:
        raise TimeoutError(f"no /dev/fuse descriptor handed over within {timeout}s") from None
    with connection:
        connection.settimeout(timeout)
        message, fds, _, _ = socket.recv_fds(connection, len(MESSAGE), 1)
        if message != MESSAGE or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise ValueError(f"handover: expected one descriptor with {MESSAGE!r}, got {message!r} and {len(fds)}")
        return fds[0]


def send(path: Path, fd: int, timeout: float) -> None:
    """Connect to the server's handover socket (polling until it listens) and send ``fd``."""
    deadline = time.monotonic() + timeout
    while True:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.settimeout(max(deadline - time.monotonic(), 0.1))
            client.connect(str(path))
            socket.send_fds(client, [MESSAGE], [fd])
            return
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server's handover socket {path} did not answer within {timeout}s") from None
            time.sleep(0.02)
        finally:
            client.close()
