"""Where a request's time goes inside the mount, stage by stage, from a deterministic profile of the server.

``python -m benchmarks --profile`` runs each workload once more on a mount
that serves under ``cProfile`` (``INTERPOSER_PROFILE``: the serving loop only,
start-up excluded; one mount per workload, so each profile is one request
mix), and splits the server's busy time by where each function lives:

* ``pyfuse3 and trio``: the binding's request loop and the event loop;
* ``adapter``: interposer/fuse (decoding a request, the pipeline's calls);
* one stage per layer: interposer/layers/<name>;
* ``telemetry``: handing kept spans over to the export machinery (interposer/telemetry, the span shipper);
* ``backend``: the backends' Python (interposer/backends);
* ``syscalls``: the system calls the server makes (``os``/``posix`` built-ins);
* ``other``: everything else the process runs (shared helpers, the SDK).

Time blocked waiting for the next request (the event loop's ``epoll``) is
idle, not a stage.  Each stage is reported in microseconds per request
served, the requests counted by the adapter's handlers.  A deterministic
profiler adds a fixed cost to every Python call, so Python-heavy stages look
heavier than they are: compare stages and runs, not these figures with the
unprofiled benchmark's.
"""

from __future__ import annotations

import pstats
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from interposer.mount.child import MountProcess
from interposer.names import PROFILE_VARIABLE, OpName

from .workloads import Settings, Target, Workload

STAGE_FRAMEWORK = "pyfuse3 and trio"
STAGE_ADAPTER = "adapter"
STAGE_BACKEND = "backend"
STAGE_SYSCALLS = "syscalls"
STAGE_TELEMETRY = "telemetry"
STAGE_OTHER = "other"
LAYER_STAGE_PREFIX = "layer "
ADAPTER_MODULE = "/interposer/fuse/adapter.py"
OPERATIONS = frozenset(op.value for op in OpName)
IDLE_FUNCTIONS = (
    "<method 'poll' of 'select.epoll' objects>",
    "<method 'recv' of '_socket.socket' objects>",
    "<method 'acquire' of '_thread.lock' objects>",
    "<built-in method time.sleep>",
)
"""Where the server waits (for the next request, a reply on a socket, a thread): idle, excluded from every stage."""
_FRAMEWORK_PATHS = ("/trio/", "/pyfuse3/", "/outcome/", "/sniffio/", "pyfuse3")
_SYSCALL_PREFIXES = (
    "<built-in method posix.",
    "<built-in method os.",
    "<method 'read' of '_io.",
    "<method 'write' of '_io.",
)


def stage_of(filename: str, function: str) -> str | None:
    """The stage a profiled function belongs to; None for idle waiting."""
    if function in IDLE_FUNCTIONS:
        return None
    if filename == "~":  # a built-in: a system call, or part of whatever called it
        return STAGE_SYSCALLS if function.startswith(_SYSCALL_PREFIXES) else STAGE_OTHER
    path = filename.replace("\\", "/")
    if "/interposer/fuse/" in path:
        return STAGE_ADAPTER
    if "/interposer/backends/" in path:
        return STAGE_BACKEND
    if "/interposer/telemetry/" in path:
        return STAGE_TELEMETRY
    layer, separator, _module = path.partition("/interposer/layers/")[2].partition("/")
    if separator:
        return LAYER_STAGE_PREFIX + layer
    if any(part in path for part in _FRAMEWORK_PATHS):
        return STAGE_FRAMEWORK
    return STAGE_OTHER


@dataclass(frozen=True)
class StageProfile:
    """The server's busy seconds per stage, and the requests it served, by operation."""

    seconds: dict[str, float]
    requests: dict[str, int]

    @classmethod
    def read(cls, profile: Path) -> StageProfile:
        """Each function's own time (callees excluded) summed by stage; idle waiting left out."""
        stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
        seconds: dict[str, float] = {}
        requests: dict[str, int] = {}
        for (filename, _line, function), (_calls, primitive_calls, own_time, _cumulative, _callers) in stats.items():
            stage = stage_of(filename, function)
            if stage is not None:
                seconds[stage] = seconds.get(stage, 0.0) + own_time
            if filename.endswith(ADAPTER_MODULE) and function in OPERATIONS:
                requests[function] = primitive_calls
        return cls(seconds, requests)

    def microseconds_per_request(self) -> dict[str, float]:
        """Each stage's busy time divided by every request served, busiest stage first."""
        total = sum(self.requests.values()) or 1
        ranked = sorted(
            ((stage, value) for stage, value in self.seconds.items() if value > 0), key=lambda item: -item[1]
        )
        return {stage: value * 1e6 / total for stage, value in ranked}


def profiled_mount(
    backing: Path, mountpoint: Path, arguments: list[str], profile: Path, log: IO[bytes]
) -> MountProcess:
    """A mount whose serving loop runs under cProfile, which writes ``profile`` when the mount stops."""
    return MountProcess(backing, mountpoint, arguments, log=log, env={PROFILE_VARIABLE: str(profile)})


def profile_workloads(
    workloads: list[Workload], base: Path, arguments: list[str], settings: Settings
) -> dict[str, dict[str, dict[str, float]]]:
    """Each workload once, on a profiled mount of its own."""
    work = base / "profile"
    work.mkdir(exist_ok=True)
    results = {}
    for workload in workloads:
        backing, mountpoint = work / f"{workload.name}-backing", work / f"{workload.name}-mnt"
        backing.mkdir()
        mountpoint.mkdir()
        with (
            (work / f"{workload.name}.log").open("wb") as log,
            profiled_mount(backing, mountpoint, arguments, work / f"{workload.name}.prof", log),
        ):
            workload.run(Target(mountpoint, backing), settings)
        profile = StageProfile.read(work / f"{workload.name}.prof")
        results[workload.name] = {
            "requests": {op: float(count) for op, count in profile.requests.items()},
            "microseconds_per_request": profile.microseconds_per_request(),
        }
    return results
