"""The driver's state on disk: one JSON record per published target or provisioned volume.

Every record is written atomically (temporary file, fsync, rename), so a plugin
killed at any moment restarts knowing exactly the volumes it had, and every RPC
can compare a repeated request with what it did the first time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

Record = TypeVar("Record", bound=BaseModel)


class Publication(BaseModel):
    """A volume published at a target path by this node."""

    volume_id: str
    target_path: str
    backing: str
    fresh: bool
    """The backing directory was made for this publication and goes with it."""
    volume_context: dict[str, str]
    readonly: bool
    pid: int | None = None
    """The volume server's process, when a local launcher started it."""
    start_time: int | None = None
    """The process's start time in clock ticks since boot: a pid alone can be reused."""
    cgroup: str | None = None
    """The server's own cgroup, when the local launcher was given a cgroup root."""
    pod: str | None = None
    """The server's pod, when the Kubernetes launcher started it."""
    lost: str | None = None
    """Why the server was found gone (logged and counted once, restarts included); cleared by a new server."""


class ProvisionedVolume(BaseModel):
    """A volume made by CreateVolume."""

    volume_id: str
    name: str
    parameters: dict[str, str]
    capacity_bytes: int


def key_of(text: str) -> str:
    """A file name for any string (target paths hold slashes)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class RecordStore(Generic[Record]):
    """Records of one kind in one directory, keyed by a string."""

    def __init__(self, directory: Path, model: type[Record]) -> None:
        self.directory = directory
        self.model = model
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key_of(key)}.json"

    def get(self, key: str) -> Record | None:
        try:
            return self.model.model_validate_json(self._path(key).read_bytes())
        except FileNotFoundError:
            return None

    def put(self, key: str, record: Record) -> None:
        path = self._path(key)
        temporary = path.with_suffix(".tmp")
        with temporary.open("w") as file:
            json.dump(record.model_dump(mode="json"), file, indent=2)
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(path)
        directory = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def __iter__(self) -> Iterator[Record]:
        for path in sorted(self.directory.glob("*.json")):
            try:
                yield self.model.model_validate_json(path.read_bytes())
            except (OSError, ValidationError) as exc:
                log.error("ignoring unreadable state record %s: %s", path, exc)
