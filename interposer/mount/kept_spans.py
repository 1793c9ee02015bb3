"""The default span files, kept after their mounts: where they live, how they are named, listed and pruned.

A mount without ``tracing.file`` writes its spans to a new file in the state
directory (``$XDG_STATE_HOME/cnfs-interposer``, else
``~/.local/state/cnfs-interposer``; ``/var/lib/cnfs-interposer`` for root),
so a user who mounts, runs a workload and unmounts can still read what it did.
The file's path says which mount it was: ``spans/<mountpoint>/<start>.spans.jsonl``
mirrors the mountpoint as directories (readable, reversible, and never past a
file name's length limit) and names the start time in UTC, so names sort by
age.  The files are bounded as a whole by ``tracing.kept_max_bytes``: past
it, the oldest go first, but never the file a running mount writes.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..telemetry.spanfile import rotated
from .control import INTERPOSER_FSTYPE
from .table import mount_at

STATE_DIR_VARIABLE = "INTERPOSER_STATE_DIR"
"""When set, the state directory itself, for root as for users (the tests point it at a scratch directory)."""
_APP = "cnfs-interposer"
_SUFFIX = ".spans.jsonl"
_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
"""ISO 8601 basic format in UTC: no ':' (which tools such as scp and make read as separators), sorts by age."""


def state_dir() -> Path:
    """Where what outlives a mount is kept: ``STATE_DIR_VARIABLE``, else /var/lib for root, else XDG state."""
    explicit = os.environ.get(STATE_DIR_VARIABLE)
    if explicit:
        return Path(explicit).absolute()
    if os.geteuid() == 0:
        return Path("/var/lib") / _APP
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base).absolute() / _APP


def spans_dir() -> Path:
    """The root of the kept span files."""
    return state_dir() / "spans"


def new_path(mountpoint: str | os.PathLike[str], started: datetime) -> Path:
    """The kept span file of a mount at ``mountpoint`` started at ``started``."""
    relative = os.path.abspath(mountpoint).lstrip("/")
    return spans_dir() / relative / (started.astimezone(UTC).strftime(_TIME_FORMAT) + _SUFFIX)


def prepare() -> None:
    """Make the root private before the export process writes below it: spans name paths and commands."""
    root = spans_dir()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    root.chmod(0o700)


@dataclass(frozen=True)
class KeptSpanFile:
    """One kept span file: the mount it recorded, when that mount started, and its size with its rotation."""

    path: Path
    mountpoint: str
    started: datetime
    size: int


def kept() -> list[KeptSpanFile]:
    """Every kept span file, oldest first (a name that is not one of ours is skipped)."""
    root = spans_dir()
    files = []
    for path in root.rglob("*" + _SUFFIX):
        try:
            started = datetime.strptime(path.name.removesuffix(_SUFFIX), _TIME_FORMAT).replace(tzinfo=UTC)
            size = sum(part.stat().st_size for part in (path, rotated(path)) if part.exists())
        except (ValueError, OSError):
            continue
        if path.is_file():
            files.append(KeptSpanFile(path, str(Path("/") / path.parent.relative_to(root)), started, size))
    return sorted(files, key=lambda file: file.started)


def latest(mountpoint: str | os.PathLike[str]) -> KeptSpanFile | None:
    """The kept span file of the last mount at ``mountpoint``, if any."""
    target = os.path.abspath(mountpoint)
    of_mount = [file for file in kept() if file.mountpoint == target]
    return of_mount[-1] if of_mount else None


def prune(max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Remove the oldest kept files until all weigh at most ``max_bytes``; return what was removed.

    ``keep`` (the file of the mount that just ended) and the newest file of every mountpoint that is an
    interposer mount now (a running mount's) are never removed: their spans are the ones wanted next.
    """
    files = kept()
    total = sum(file.size for file in files)
    newest = {file.mountpoint: file.path for file in files}
    removed = []
    for file in files:
        if total <= max_bytes:
            break
        if file.path == keep or (newest[file.mountpoint] == file.path and _is_running(file.mountpoint)):
            continue
        for part in (file.path, rotated(file.path)):
            part.unlink(missing_ok=True)
        _remove_empty_parents(file.path.parent)
        total -= file.size
        removed.append(file.path)
    return removed


def _is_running(mountpoint: str) -> bool:
    entry = mount_at(mountpoint)
    return entry is not None and entry.fstype == INTERPOSER_FSTYPE


def _remove_empty_parents(directory: Path) -> None:
    """Drop the directories a removed file leaves empty, up to the root of the kept files."""
    root = spans_dir()
    while directory != root and root in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return  # not empty: another mountpoint's files, or a mount started meanwhile
        directory = directory.parent


def reading_hint(span_file: Path) -> str:
    """Where a mount's spans are and the command that reads them: what unmounting tells the user."""
    return f"its spans are in {span_file}; read them with: interposer traces {shlex.quote(str(span_file))} --summary"
