"""Checks of the volume capabilities a request carries."""

from __future__ import annotations

from collections.abc import Iterable

from .csi_pb2 import VolumeCapability
from .errors import invalid

UNKNOWN_MODE = VolumeCapability.AccessMode.UNKNOWN


def check_capability(capability: VolumeCapability, field: str) -> None:
    """The driver serves file systems (mount access) in every access mode; block access is refused."""
    if capability.HasField("block"):
        raise invalid(f"{field}: block access is not supported; allowed access types: mount")
    if not capability.HasField("mount"):
        raise invalid(f"{field}.access_type is required; allowed access types: mount")
    if capability.access_mode.mode == UNKNOWN_MODE:
        allowed = ", ".join(VolumeCapability.AccessMode.Mode.keys()[1:])  # all but UNKNOWN
        raise invalid(f"{field}.access_mode.mode is required; allowed: {allowed}")


def check_capabilities(capabilities: Iterable[VolumeCapability], field: str) -> None:
    listed = list(capabilities)
    if not listed:
        raise invalid(f"{field} is required")
    for index, capability in enumerate(listed):
        check_capability(capability, f"{field}[{index}]")
