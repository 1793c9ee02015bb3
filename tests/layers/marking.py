"""A stand-in for the fault and throttle layers: it reports on requests the way they will.

Requests on paths containing 'flaky' get a fault (EIO) and an event; requests on
paths containing 'slow' get a throttle-wait event and succeed.
"""

from __future__ import annotations

import errno

from interposer.fuse.pipeline import NextCall
from interposer.fuse.request import Notes, Reply, Request
from interposer.names import ATTR_FAULT_ERRNO, ATTR_THROTTLE_LIMIT, ATTR_THROTTLE_WAIT, EVENT_FAULT, EVENT_THROTTLE

WAIT = 0.001
LIMIT = "marking"


class MarkingLayer:
    async def __call__(self, request: Request, notes: Notes, call_next: NextCall) -> Reply:
        if "flaky" in request.path:
            notes.fault = "errno"
            notes.event(EVENT_FAULT, {ATTR_FAULT_ERRNO: "EIO"})
            raise OSError(errno.EIO, "injected")
        if "slow" in request.path:
            notes.event(EVENT_THROTTLE, {ATTR_THROTTLE_WAIT: WAIT, ATTR_THROTTLE_LIMIT: LIMIT})
        return await call_next(request, notes)
