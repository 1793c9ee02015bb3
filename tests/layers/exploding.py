"""A layer with a bug: it raises a non-OSError for any path containing 'boom'.

It stands for any defect in a layer or backend; the mount must answer EIO for
that one request and keep serving everything else.
"""

from __future__ import annotations

from typing import Any

from interposer.fuse.pipeline import NextCall
from interposer.fuse.request import Op


class ExplodingLayer:
    async def __call__(self, op: Op, call_next: NextCall) -> Any:
        if "boom" in op.path:
            raise ZeroDivisionError("a defect in a layer")
        return await call_next(op)
