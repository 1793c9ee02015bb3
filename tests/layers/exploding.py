"""A layer with a bug: it raises a non-OSError for any path containing 'boom'.

It stands for any defect in a layer or backend; the mount must answer EIO for
that one request and keep serving everything else.
"""

from __future__ import annotations

from interposer.fuse.pipeline import NextCall
from interposer.fuse.request import Notes, Reply, Request


class ExplodingLayer:
    async def __call__(self, request: Request, notes: Notes, call_next: NextCall) -> Reply:
        if "boom" in request.path:
            raise ZeroDivisionError("a defect in a layer")
        return await call_next(request, notes)
