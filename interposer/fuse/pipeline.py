"""The layer chain every request goes through: Observe -> Throttle -> Faults -> Backend.

A layer is any object with ``async def __call__(op, call_next)``.  It may look
at the op, wait, fail it (by raising ``OSError``), or pass it on with
``await call_next(op)`` and look at the result.  The chain is compiled into
nested closures once, so a request pays one call per layer and nothing else;
replacing the layers swaps the compiled chain in one assignment, which is what
makes runtime reconfiguration atomic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from .request import Op

NextCall = Callable[[Op], Awaitable[Any]]


class Layer(Protocol):
    """One stage of the request path, written once for every operation."""

    async def __call__(self, op: Op, call_next: NextCall) -> Any: ...


def _bind(layer: Layer, call_next: NextCall) -> NextCall:
    async def call(op: Op) -> Any:
        return await layer(op, call_next)

    return call


class Pipeline:
    """The compiled chain from the outermost layer to the backend."""

    def __init__(self, terminal: NextCall, layers: Sequence[Layer] = ()) -> None:
        self._terminal = terminal
        self.layers: tuple[Layer, ...] = ()
        self.call: NextCall = terminal
        self.replace(layers)

    def replace(self, layers: Sequence[Layer]) -> None:
        """Install a new set of layers, outermost first; requests already running finish on the old chain."""
        call = self._terminal
        for layer in reversed(layers):
            call = _bind(layer, call)
        self.layers = tuple(layers)
        self.call = call
