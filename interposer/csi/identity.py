"""The Identity service: who the plugin is, what it serves, whether it is ready."""

from __future__ import annotations

from google.protobuf.wrappers_pb2 import BoolValue

from .. import __version__
from ..names import CSI_DRIVER_NAME
from .csi_pb2 import (
    GetPluginCapabilitiesRequest,
    GetPluginCapabilitiesResponse,
    GetPluginInfoRequest,
    GetPluginInfoResponse,
    PluginCapability,
    ProbeRequest,
    ProbeResponse,
)


class IdentityService:
    def __init__(self, serves_controller: bool) -> None:
        self.serves_controller = serves_controller

    def GetPluginInfo(self, _request: GetPluginInfoRequest) -> GetPluginInfoResponse:
        return GetPluginInfoResponse(name=CSI_DRIVER_NAME, vendor_version=__version__)

    def GetPluginCapabilities(self, _request: GetPluginCapabilitiesRequest) -> GetPluginCapabilitiesResponse:
        capabilities = []
        if self.serves_controller:
            service = PluginCapability.Service(type=PluginCapability.Service.CONTROLLER_SERVICE)
            capabilities.append(PluginCapability(service=service))
        return GetPluginCapabilitiesResponse(capabilities=capabilities)

    def Probe(self, _request: ProbeRequest) -> ProbeResponse:
        return ProbeResponse(ready=BoolValue(value=True))
