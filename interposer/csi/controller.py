"""The Controller service: persistent volumes as directories under one root.

CreateVolume validates the StorageClass parameters with the interposer's
config model, makes ``<root>/<volume id>`` and hands the parameters to the
node through the volume context, so a PersistentVolume is configured exactly
like an inline volume.  The root must be reachable at the same path on every
node that mounts the volumes: a single-node cluster, or shared storage.
Capacity is recorded, not enforced: a directory has no size of its own.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import threading
from pathlib import Path

from .attributes import BACKING_DIR, parse
from .csi_pb2 import (
    ControllerGetCapabilitiesRequest,
    ControllerGetCapabilitiesResponse,
    ControllerServiceCapability,
    CreateVolumeRequest,
    CreateVolumeResponse,
    DeleteVolumeRequest,
    DeleteVolumeResponse,
    ValidateVolumeCapabilitiesRequest,
    ValidateVolumeCapabilitiesResponse,
    Volume,
)
from .errors import CsiError, already_exists, invalid, not_found, required
from .state import ProvisionedVolume, RecordStore
from .validation import check_capabilities

log = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def volume_id_for(name: str) -> str:
    """The CO's name when it is a safe directory name (pvc-<uid> is), else a digest of it."""
    return name if _SAFE_ID.match(name) else "vol-" + hashlib.sha256(name.encode()).hexdigest()[:32]


class ControllerService:
    def __init__(self, volumes_root: Path, state_dir: Path) -> None:
        self.volumes_root = volumes_root
        self.volumes = RecordStore(state_dir / "volumes", ProvisionedVolume)
        self.lock = threading.Lock()
        volumes_root.mkdir(parents=True, exist_ok=True)

    def ControllerGetCapabilities(
        self, _request: ControllerGetCapabilitiesRequest
    ) -> ControllerGetCapabilitiesResponse:
        rpc = ControllerServiceCapability.RPC(type=ControllerServiceCapability.RPC.CREATE_DELETE_VOLUME)
        return ControllerGetCapabilitiesResponse(capabilities=[ControllerServiceCapability(rpc=rpc)])

    def CreateVolume(self, request: CreateVolumeRequest) -> CreateVolumeResponse:
        name = required(request.name, "name")
        check_capabilities(request.volume_capabilities, "volume_capabilities")
        parameters = dict(request.parameters)
        parse(parameters, "parameters", allow_backing=False)
        capacity = max(request.capacity_range.required_bytes, request.capacity_range.limit_bytes)
        volume_id = volume_id_for(name)
        with self.lock:
            existing = self.volumes.get(volume_id)
            if existing is not None and (existing.parameters != parameters or existing.capacity_bytes != capacity):
                raise already_exists(f"volume {name!r} exists with other parameters or capacity")
            record = ProvisionedVolume(volume_id=volume_id, name=name, parameters=parameters, capacity_bytes=capacity)
            directory = self.volumes_root / volume_id
            directory.mkdir(exist_ok=True)
            directory.chmod(0o777)  # any uid in the pod may write
            self.volumes.put(volume_id, record)
        log.info("volume %s ready at %s", volume_id, directory)
        return CreateVolumeResponse(volume=self._volume(record))

    def DeleteVolume(self, request: DeleteVolumeRequest) -> DeleteVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        if not _SAFE_ID.match(volume_id):
            raise invalid(f"volume_id {volume_id!r} is not a volume id of this driver")
        with self.lock:
            shutil.rmtree(self.volumes_root / volume_id, ignore_errors=True)
            self.volumes.delete(volume_id)
        log.info("volume %s deleted", volume_id)
        return DeleteVolumeResponse()

    def ValidateVolumeCapabilities(
        self, request: ValidateVolumeCapabilitiesRequest
    ) -> ValidateVolumeCapabilitiesResponse:
        volume_id = required(request.volume_id, "volume_id")
        if not request.volume_capabilities:
            raise invalid("volume_capabilities is required")
        if self.volumes.get(volume_id) is None:
            raise not_found(f"volume {volume_id} does not exist")
        try:
            check_capabilities(request.volume_capabilities, "volume_capabilities")
        except CsiError as unsupported:
            return ValidateVolumeCapabilitiesResponse(message=unsupported.message)
        confirmed = ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_context=request.volume_context,
            volume_capabilities=request.volume_capabilities,
            parameters=request.parameters,
        )
        return ValidateVolumeCapabilitiesResponse(confirmed=confirmed)

    def _volume(self, record: ProvisionedVolume) -> Volume:
        return Volume(
            volume_id=record.volume_id,
            capacity_bytes=record.capacity_bytes,
            volume_context={**record.parameters, BACKING_DIR: record.volume_id},
        )
