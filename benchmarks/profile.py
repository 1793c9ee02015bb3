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
* ``other``: shared helpers of the interposer's (interposer/*.py) and what no stage calls.

A library function or built-in that belongs to no stage (``dict.get``, the
OpenTelemetry SDK, ``collections``, ``outcome``) is charged to the stage that
called it, call edge by call edge, as the profile records each edge's time: a
layer's clock reads count for that layer, trio's bookkeeping for trio.

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
from typing import IO, Any

from interposer.mount.child import MountProcess
from interposer.names import PROFILE_VARIABLE, OpName

from .workloads import Settings, Target, Workload

STAGE_FRAMEWORK = "pyfuse3 and trio"
STAGE_ADAPTER = "adapter"
STAGE_BACKEND = "backend"
STAGE_SYSCALLS = "syscalls"
STAGE_TELEMETRY = "telemetry"
STAGE_OTHER = "other"
STAGE_CALLER = "(its caller's)"
"""Not a stage: a function whose time is charged to the stage of the function that called it."""
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
_FRAMEWORK_PATHS = ("/trio/", "/pyfuse3/", "/outcome/", "/sniffio/", "pyfuse3", "outcome._impl")
_SYSCALL_PREFIXES = (
    "<built-in method posix.",
    "<built-in method os.",
    "<method 'read' of '_io.",
    "<method 'write' of '_io.",
)


def stage_of(filename: str, function: str) -> str | None:
    """The stage a profiled function belongs to; None for idle waiting, ``STAGE_CALLER`` for a library's function
    or a built-in that is part of whatever called it."""
    if function in IDLE_FUNCTIONS:
        return None
    if filename == "~":  # a built-in: a system call, or part of whatever called it
        return STAGE_SYSCALLS if function.startswith(_SYSCALL_PREFIXES) else STAGE_CALLER
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
    if "/interposer/" in path:
        return STAGE_OTHER
    return STAGE_CALLER


@dataclass(frozen=True)
class StageProfile:
    """The server's busy seconds per stage, and the requests it served, by operation."""

    seconds: dict[str, float]
    requests: dict[str, int]

    @classmethod
    def read(cls, profile: Path) -> StageProfile:
        """Each function's own time (callees excluded) summed by stage, a caller-charged function's along each call
        edge to its caller's stage; idle waiting left out."""
        stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
        own = {function: stage_of(function[0], function[2]) for function in stats}
        resolved: dict[Any, str | None] = {}

        def stage(function: Any, visiting: frozenset[Any] = frozenset()) -> str | None:
            """A function's stage; a caller-charged one takes that of the caller that spent most time in it."""
            if own.get(function, STAGE_OTHER) != STAGE_CALLER:
                return own.get(function, STAGE_OTHER)
            if function not in resolved:
                callers = stats[function][4]
                ranked = sorted(callers, key=lambda caller: -callers[caller][2])
                found = next((s for c in ranked if c not in visiting for s in [stage(c, visiting | {function})]), None)
                resolved[function] = STAGE_OTHER if found in (None, STAGE_CALLER) else found
            return resolved[function]

        seconds: dict[str, float] = {}
        requests: dict[str, int] = {}
        for function, (_calls, primitive_calls, own_time, _cumulative, callers) in stats.items():
            filename, _line, name = function
            edges = callers.items() if own[function] == STAGE_CALLER and callers else [(None, (0, 0, own_time, 0))]
            for caller, (_n, _p, edge_time, _c) in edges:
                charged = stage(function) if caller is None else stage(caller)
                if charged == STAGE_CALLER:
                    charged = STAGE_OTHER
                if charged is not None:
                    seconds[charged] = seconds.get(charged, 0.0) + edge_time
            if filename.endswith(ADAPTER_MODULE) and name in OPERATIONS:
                requests[name] = primitive_calls
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
