"""The layer chain every request goes through: Tracing -> Metrics -> Throttle -> Faults -> (extra) -> Crash -> Backend.

The layers are built and ordered in one place, ``mount/registry.py``; this module only runs them.

A layer is any object with ``async def __call__(request, notes, call_next)``.
It reads the request, may wait, fail it (by raising ``OSError``), or pass it on
with ``await call_next(request, notes)`` and read the reply.  It writes into
neither: it reports to the layers outside it through ``notes``, passes a copy
(``Request.with_changes``) to send something else inward, and returns a new
``Reply`` to change the answer.  The chain is compiled into nested closures
once, so a request pays one call per layer and nothing else; replacing the
layers swaps the compiled chain in one assignment, which is what makes runtime
reconfiguration atomic.  Every request goes this way, the mount's reserved
extended attributes included: a layer answers them, and the end of the chain
keeps them from the backend (``reserved``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from ..names import OpName
from .request import Notes, Reply, Request
from .reserved import is_reserved, unanswered, visible

_LISTXATTR = OpName.LISTXATTR
NextCall = Callable[[Request, Notes], Awaitable[Reply]]
Terminal = Callable[[Request], Awaitable[Reply]]


class Layer(Protocol):
    """One stage of the request path, written once for every operation."""

    async def __call__(self, request: Request, notes: Notes, call_next: NextCall, /) -> Reply: ...


def _bind(layer: Layer, call_next: NextCall) -> NextCall:
    async def call(request: Request, notes: Notes) -> Reply:
        return await layer(request, notes, call_next)

    return call


def _terminal(backend: Terminal) -> NextCall:
    """The backend's end of the chain: a reserved xattr name passes it in neither direction (``reserved``)."""

    async def call(request: Request, _notes: Notes) -> Reply:
        if request.xattr_name and is_reserved(request.xattr_name):
            raise unanswered(request.xattr_name)
        reply = await backend(request)
        if request.name is _LISTXATTR:
            return reply.with_value(visible(reply.value))
        return reply

    return call


class Pipeline:
    """The compiled chain from the outermost layer to the backend."""

    def __init__(self, backend: Terminal, layers: Sequence[Layer] = ()) -> None:
        self._terminal = _terminal(backend)
        self.layers: tuple[Layer, ...] = ()
        self.call: NextCall = self._terminal
        self.replace(layers)

    def replace(self, layers: Sequence[Layer]) -> None:
        """Install a new set of layers, outermost first; requests already running finish on the old chain."""
        call = self._terminal
        for layer in reversed(layers):
            call = _bind(layer, call)
        self.layers = tuple(layers)
        self.call = call
