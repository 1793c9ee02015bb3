"""A layer that records what passes it on the way to the backend, and what comes back.

Extra layers run just outside the crash journal, which passes every request and reply through unchanged, so this
layer sees what reaches the backend and what it replies.
"""

from __future__ import annotations

from interposer.fuse.pipeline import NextCall
from interposer.fuse.request import Notes, Reply, Request


class SeenRequests:
    def __init__(self) -> None:
        self.seen: list[tuple[Request, Reply]] = []

    async def __call__(self, request: Request, notes: Notes, call_next: NextCall) -> Reply:
        reply = await call_next(request, notes)
        self.seen.append((request, reply))
        return reply
