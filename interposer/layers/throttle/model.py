"""Throttle limits: token buckets shared by the whole mount, one per kind of work."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...section import Section


class Limit(Section):
    """A sustained rate and the burst allowed above it."""

    rate: float = Field(gt=0, description="Units per second: bytes for bandwidth, requests for IOPS.")
    burst: float | None = Field(None, gt=0, description="Bucket size; unset: one second's worth of rate.")


class ThrottleConfig(Section):
    """Rate limits.  Unset limits do not apply."""

    enabled: bool = Field(True, description="Apply the limits (the layer is present whenever a limit is set).")
    mode: Literal["wait", "fail"] = Field(
        "wait", description="wait: queue in order up to max_wait, then EAGAIN; fail: EAGAIN at once when over."
    )
    max_wait: float = Field(30.0, gt=0, le=3600, description="Longest a request waits before failing with EAGAIN.")
    read_bytes: Limit | None = Field(None, description="Bytes read per second.")
    write_bytes: Limit | None = Field(None, description="Bytes written per second.")
    read_iops: Limit | None = Field(None, description="Read requests per second.")
    write_iops: Limit | None = Field(None, description="Write requests per second.")
    metadata_iops: Limit | None = Field(None, description="Other requests per second (lookup, getattr, mkdir, …).")

    def limits(self) -> dict[str, Limit]:
        """The limits that are set, by field name (the name each wait is reported under)."""
        return {name: limit for name in _LIMIT_FIELDS if (limit := getattr(self, name)) is not None}


_LIMIT_FIELDS = ("read_bytes", "write_bytes", "read_iops", "write_iops", "metadata_iops")
