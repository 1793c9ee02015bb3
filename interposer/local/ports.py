"""Free TCP ports on 127.0.0.1 for the local stack's servers (and the tests' own).

Asking the kernel for port 0 and closing the socket hands out a port from the
ephemeral range (``net.ipv4.ip_local_port_range``), where any outgoing
connection on the machine may take it before its server binds it, and where
two asks in a row may return the same port: a stack of a dozen servers then
fails now and then with "address already in use".  Ports here come from below
that range, which the kernel never gives to a connection by itself, and are
held until all of them are chosen, so they are distinct.
"""

from __future__ import annotations

import contextlib
import errno
import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10000
"""Below this are well-known and registered services' usual ports."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on, between ``LOWEST`` and the ephemeral range."""
    ceiling = int(EPHEMERAL_RANGE.read_text().split()[0])
    held: list[socket.socket] = []
    with contextlib.ExitStack() as stack:
        for candidate in random.sample(range(LOWEST, ceiling), ceiling - LOWEST):
            probe = stack.enter_context(socket.socket())
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            held.append(probe)
            if len(held) == count:
                return [sock.getsockname()[1] for sock in held]
    raise OSError(errno.EADDRINUSE, f"fewer than {count} free ports between {LOWEST} and {ceiling}")


def free_port() -> int:
    """One port nothing listens on, outside the ephemeral range."""
    [port] = free_ports(1)
    return port
