"""A stand-in for the fault and throttle layers: it reports on requests the way they will.

Requests on paths containing 'flaky' get a fault (EIO) and an event; requests on
paths containing 'slow' get a throttle-wait event and succeed.
"""

from __future__ import annotations

import errno
from typing import Any

from interposer.fuse.pipeline import NextCall
from interposer.fuse.request import Op
from interposer.names import ATTR_FAULT_ERRNO, ATTR_THROTTLE_LIMIT, ATTR_THROTTLE_WAIT, EVENT_FAULT, EVENT_THROTTLE

WAIT = 0.001
LIMIT = "marking"


class MarkingLayer:
    async def __call__(self, op: Op, call_next: NextCall) -> Any:
        if "flaky" in op.path:
            op.fault = "errno"
            op.events = [(EVENT_FAULT, {ATTR_FAULT_ERRNO: "EIO"})]
            raise OSError(errno.EIO, "injected")
        if "slow" in op.path:
            op.events = [(EVENT_THROTTLE, {ATTR_THROTTLE_WAIT: WAIT, ATTR_THROTTLE_LIMIT: LIMIT})]
        return await call_next(op)
