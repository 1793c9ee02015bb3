"""The Node service: publish a volume as an interposer mount at kubelet's target path.

The plugin mounts; each volume's server is launched apart from it (see
``supervisor`` and ``launcher``), so volumes keep serving while the plugin is
killed, restarted or upgraded, and a restarted plugin adopts them from the
records.

Publish and unpublish are idempotent: the record of each target path on disk
says what was done, so a repeated call (or a call after a plugin restart)
finds the work done and answers OK, and a call that conflicts with it gets
ALREADY_EXISTS.  Nothing is half-applied: a publish that fails removes what it
made before it answers.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import grpc

from ..config import merge
from .attributes import VolumeAttributes, parse
from .csi_pb2 import (
    NodeGetCapabilitiesRequest,
    NodeGetCapabilitiesResponse,
    NodeGetInfoRequest,
    NodeGetInfoResponse,
    NodeGetVolumeStatsRequest,
    NodeGetVolumeStatsResponse,
    NodePublishVolumeRequest,
    NodePublishVolumeResponse,
    NodeServiceCapability,
    NodeUnpublishVolumeRequest,
    NodeUnpublishVolumeResponse,
    VolumeCondition,
    VolumeUsage,
)
from .errors import CsiError, already_exists, invalid, not_found, required
from .metrics import servers_lost
from .paths import confine, confine_mountpoint
from .state import Publication, RecordStore, key_of
from .supervisor import Condition, Supervisor
from .validation import check_capability

log = logging.getLogger(__name__)

_CAPABILITIES = (NodeServiceCapability.RPC.GET_VOLUME_STATS, NodeServiceCapability.RPC.VOLUME_CONDITION)


@dataclass(frozen=True)
class NodeRoots:
    """The directories the node service may touch."""

    kubelet: Path
    """Targets must lie under it."""
    host: Path | None
    """Ephemeral volumes' ``backingDir`` is taken from it; unset: only fresh per-volume directories."""
    volumes: Path
    """Provisioned volumes' directories (the controller's root)."""
    state: Path
    """Records, fresh backing directories, and the interposers' configs and logs."""


class NodeService:
    def __init__(self, node_id: str, roots: NodeRoots, supervisor: Supervisor, max_volumes: int = 0) -> None:
        self.node_id = node_id
        self.roots = roots
        self.max_volumes = max_volumes
        self.publications = RecordStore(roots.state / "publications", Publication)
        self.fresh_root = roots.state / "fresh"
        self.supervisor = supervisor
        self.lock = threading.RLock()
        self.on_publish: Callable[[], None] | None = None
        """Told of each new publication: live control applies the resources that select it at once."""

    def adopt(self) -> None:
        """Take over the servers a previous plugin started: they run on, and those found gone are noted."""
        for publication in self.publications:
            condition = self._condition(publication)
            if not condition.abnormal:
                log.info(
                    "adopted volume %s at %s: %s", publication.volume_id, publication.target_path, condition.message
                )

    def NodeGetInfo(self, _request: NodeGetInfoRequest) -> NodeGetInfoResponse:
        return NodeGetInfoResponse(node_id=self.node_id, max_volumes_per_node=self.max_volumes)

    def NodeGetCapabilities(self, _request: NodeGetCapabilitiesRequest) -> NodeGetCapabilitiesResponse:
        return NodeGetCapabilitiesResponse(
            capabilities=[NodeServiceCapability(rpc=NodeServiceCapability.RPC(type=kind)) for kind in _CAPABILITIES]
        )

    def NodePublishVolume(self, request: NodePublishVolumeRequest) -> NodePublishVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        target = self._target(request.target_path, "target_path")
        if not request.HasField("volume_capability"):
            raise invalid("volume_capability is required")
        check_capability(request.volume_capability, "volume_capability")
        context = dict(request.volume_context)
        attributes = parse(context, "volume_context")
        with self.lock:
            existing = self.publications.get(str(target))
            if existing is not None:
                if existing.volume_id != volume_id:
                    raise already_exists(f"target_path {target} already holds volume {existing.volume_id}")
                if existing.volume_context != context or existing.readonly != request.readonly:
                    raise already_exists(
                        f"volume {volume_id} is published at {target} with a different volume_context or readonly"
                    )
                condition = self._condition(existing)
                if not condition.abnormal:
                    return NodePublishVolumeResponse()
                log.warning("volume %s at %s: %s; starting a new server", volume_id, target, condition.message)
                self.supervisor.stop(existing)
                publication = existing
            else:
                publication = self._new_publication(volume_id, target, attributes, context, request.readonly)
            self._start(publication, attributes, created=existing is None)
        if self.on_publish is not None:
            self.on_publish()
        return NodePublishVolumeResponse()

    def NodeUnpublishVolume(self, request: NodeUnpublishVolumeRequest) -> NodeUnpublishVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        target = self._target(request.target_path, "target_path")
        with self.lock:
            publication = self.publications.get(str(target))
            if publication is None:
                _remove_mountpoint(target)
                return NodeUnpublishVolumeResponse()
            if publication.volume_id != volume_id:
                raise not_found(f"volume {volume_id} is not published at {target} (it holds {publication.volume_id})")
            self.supervisor.stop(publication)
            self._remove(publication)
        log.info("unpublished volume %s from %s", volume_id, target)
        return NodeUnpublishVolumeResponse()

    def NodeGetVolumeStats(self, request: NodeGetVolumeStatsRequest) -> NodeGetVolumeStatsResponse:
        volume_id = required(request.volume_id, "volume_id")
        path = required(request.volume_path, "volume_path")
        if not PurePosixPath(path).is_absolute():
            # No volume is ever published at a relative path, so the spec's condition "the volume does not
            # exist on volume_path" holds: NOT_FOUND, and the path is never resolved. An absolute path outside
            # the kubelet root is still refused by confine_mountpoint with INVALID_ARGUMENT: the driver may not
            # look there, and a plugin whose --kubelet-dir is not kubelet's must say so, not "not found".
            raise not_found(f"volume {volume_id} is not published at volume_path {path!r}: a relative path")
        publication = self.publications.get(str(confine_mountpoint(path, self.roots.kubelet, "volume_path")))
        if publication is None or publication.volume_id != volume_id:
            raise not_found(f"volume {volume_id} is not published at volume_path {path}")
        condition = self._condition(publication)
        stats = condition.stats
        if stats is None:  # the mount does not answer: the backing directory's usage, if it answers
            measured = self.supervisor.prober.statvfs(publication.backing)
            if not isinstance(measured, os.statvfs_result):
                return NodeGetVolumeStatsResponse(volume_condition=_volume_condition(condition))
            stats = measured
        usage = [
            VolumeUsage(
                unit=VolumeUsage.BYTES,
                total=stats.f_blocks * stats.f_frsize,
                available=stats.f_bavail * stats.f_frsize,
                used=(stats.f_blocks - stats.f_bfree) * stats.f_frsize,
            ),
            VolumeUsage(
                unit=VolumeUsage.INODES,
                total=stats.f_files,
                available=stats.f_favail,
                used=stats.f_files - stats.f_ffree,
            ),
        ]
        return NodeGetVolumeStatsResponse(usage=usage, volume_condition=_volume_condition(condition))

    def abnormal_volumes(self) -> list[Publication]:
        """Publications whose server is gone or whose mount does not answer.  One being published (no server
        recorded yet) is not looked at: its server is starting, and the publish itself fails if it cannot."""
        return [
            record
            for record in self.publications
            if (record.pid is not None or record.pod is not None) and self._condition(record).abnormal
        ]

    def _condition(self, publication: Publication) -> Condition:
        """The volume's condition; a server newly found gone or hung is logged, counted and recorded once."""
        condition = self.supervisor.condition(publication)
        if condition.abnormal and publication.lost is None:
            log.error("volume %s at %s: %s", publication.volume_id, publication.target_path, condition.message)
            servers_lost.inc()
            with self.lock:
                current = self.publications.get(publication.target_path)
                if current is not None and current.lost is None:
                    self.publications.put(
                        publication.target_path, current.model_copy(update={"lost": condition.message})
                    )
        return condition

    def _target(self, text: str, field: str) -> Path:
        return confine_mountpoint(required(text, field), self.roots.kubelet, field)

    def _new_publication(
        self, volume_id: str, target: Path, attributes: VolumeAttributes, context: dict[str, str], readonly: bool
    ) -> Publication:
        if attributes.backing_dir is None:
            if not attributes.ephemeral:
                raise invalid("volume_context[backingDir] is required for persistent volumes")
            backing, fresh = self.fresh_root / key_of(str(target)), True
        else:
            root = self.roots.host if attributes.ephemeral else self.roots.volumes
            if root is None:
                raise invalid("volume_context[backingDir]: this node allows no host directories (--host-root unset)")
            backing, fresh = confine(attributes.backing_dir, root, "volume_context[backingDir]", relative=True), False
            if not backing.is_dir():
                raise not_found(f"volume_context[backingDir] {attributes.backing_dir!r}: no such directory in {root}")
        return Publication(
            volume_id=volume_id,
            target_path=str(target),
            backing=str(backing),
            fresh=fresh,
            volume_context=context,
            readonly=readonly,
        )

    def _start(self, publication: Publication, attributes: VolumeAttributes, *, created: bool) -> None:
        """Record, then start; on failure undo what this call made and answer with the interposer's own words."""
        target = Path(publication.target_path)
        made_target = not target.exists()
        if publication.fresh:
            Path(publication.backing).mkdir(mode=0o777, parents=True, exist_ok=True)
            os.chmod(publication.backing, 0o777)  # any uid in the pod may write; the mode is not umasked
        target.mkdir(mode=0o750, parents=True, exist_ok=True)
        self.publications.put(publication.target_path, publication)
        config = merge(attributes.config, self._driver_config(publication))
        try:
            started = self.supervisor.start(publication, config, attributes.pod_environment)
        except (RuntimeError, TimeoutError, OSError) as exc:
            if created:
                self._remove(publication, remove_target=made_target)
            code = grpc.StatusCode.DEADLINE_EXCEEDED if isinstance(exc, TimeoutError) else grpc.StatusCode.INTERNAL
            raise CsiError(code, f"cannot start the server for volume {publication.volume_id}: {exc}") from None
        self.publications.put(publication.target_path, started)
        log.info("published volume %s at %s (pid %s, pod %s)", publication.volume_id, target, started.pid, started.pod)

    def _driver_config(self, publication: Publication) -> dict[str, Any]:
        """The fields the driver sets: the volume id, read-only, and a span file that goes with the volume."""
        return {
            "volume_id": publication.volume_id,
            "fuse": {"read_only": publication.readonly},
            "tracing": {"file": str(self.supervisor.files(publication.target_path)[2])},
        }

    def _remove(self, publication: Publication, *, remove_target: bool = True) -> None:
        if remove_target:
            _remove_mountpoint(Path(publication.target_path))
        if publication.fresh:
            shutil.rmtree(publication.backing, ignore_errors=True)
        self.supervisor.forget(publication.target_path)
        self.publications.delete(publication.target_path)


def _volume_condition(condition: Condition) -> VolumeCondition:
    return VolumeCondition(abnormal=condition.abnormal, message=condition.message)


def _remove_mountpoint(target: Path) -> None:
    """Kubelet leaves removing the target directory to the driver; a non-empty one is left alone."""
    try:
        target.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("leaving target %s in place: %s", target, exc.strerror)
