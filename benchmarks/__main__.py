"""``python -m benchmarks``: time each workload natively, through the mount and through references, in one run.

All directories are on the same file system; each mount serves a backing
directory beside the native one.  Per workload it prints the ratio
mount/native of their speeds (with the floor it must not fall below), and the
ratios of the mount to the references of benchmarks/references.py: pyfuse3's
own passthrough example and, for the metadata workload, the do-nothing
pyfuse3 file system.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import tempfile
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import click

from interposer.mount.child import MountProcess

from .paired import Interval, paired_ratios
from .profile import profile_workloads
from .references import example_mount, floor_mount
from .subjects import DO_NOTHING, EXAMPLE, NATIVE, Subject, scraped
from .workloads import DO_NOTHING_WORKLOADS, WORKLOADS, Settings, Target, Workload


def machine() -> dict[str, str]:
    """What the figures were measured on; fio's version only where fio is installed (benchmarks.real needs none)."""
    fio = (
        ""
        if shutil.which("fio") is None
        else subprocess.run(["fio", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    )
    return {
        "cpus": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "fio": fio,
        "memory_gib": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f}",
    }


@click.command()
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Scratch directory [default: a new one in /dev/shm: tmpfs gives a native baseline that does not drift].",
)
@click.option("--quick", is_flag=True, help="Tiny sizes and 1 s per job: checks the harness, not the speed.")
@click.option("--only", multiple=True, type=click.Choice([w.name for w in WORKLOADS]), help="Run only these.")
@click.option(
    "--mount-args",
    default="",
    help="Extra arguments for 'interposer mount', as one string (a --config here replaces the benchmark's own).",
)
@click.option(
    "--references/--no-references",
    default=True,
    show_default=True,
    help="Also run pyfuse3's passthrough example and the do-nothing pyfuse3 file system, and report ratios to them.",
)
@click.option(
    "--profile",
    is_flag=True,
    help="Then run each workload once more on a profiled mount and split the server's time per request by stage "
    "(pyfuse3 and trio, adapter, each layer, backend, syscalls): benchmarks/profile.py.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=None,
    help="Run every workload this many times, the targets' order rotated each time [default: each workload's own]: "
    "more, shorter runs (with --runtime) narrow the paired ratios' confidence intervals.",
)
@click.option("--runtime", type=click.IntRange(min=1), default=None, help="Seconds per fio job [default: 5, quick 1].")
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("benchmarks/results/latest.json"),
    show_default=True,
)
def main(
    workdir: Path | None,
    quick: bool,
    only: tuple[str, ...],
    mount_args: str,
    references: bool,
    profile: bool,
    repeats: int | None,
    runtime: int | None,
    output: Path,
) -> None:
    """Benchmark the interposer against the native directory and the references, and print the ratios."""
    settings = Settings.quick() if quick else Settings()
    if runtime is not None:
        settings = replace(settings, runtime=runtime)
    base = workdir or Path(tempfile.mkdtemp(prefix="interposer-bench-", dir="/dev/shm"))
    native, backing, mountpoint = base / "native", base / "backing", base / "mnt"
    example_backing, example_mountpoint, floor_mountpoint = base / "example-backing", base / "example", base / "floor"
    scratch = base / "do-nothing-scratch"
    for path in (native, backing, mountpoint, example_backing, example_mountpoint, floor_mountpoint, scratch):
        path.mkdir(parents=True, exist_ok=True)
    # The mount's spans stay in the scratch directory (the default would be a file in /run per mountpoint).
    (base / "bench.yaml").write_text(f"tracing:\n  file: {base / 'spans.jsonl'}\n")
    arguments = ["--config", str(base / "bench.yaml"), *shlex.split(mount_args)]
    selected = [w for w in WORKLOADS if not only or w.name in only]
    results = []
    profiles: dict[str, dict[str, dict[str, float]]] = {}
    try:
        with ExitStack() as mounts:
            log = mounts.enter_context((base / "interposer.log").open("wb"))
            mount = mounts.enter_context(MountProcess(backing, mountpoint, arguments, log=log))
            assert mount.process is not None
            metrics = (mount.status().get("metrics") or {}).get("exporters", {}).get("prometheus")
            subjects = {
                NATIVE: Subject(NATIVE, Target(native, native)),
                "mount": Subject("mount", Target(mountpoint, backing), mount.process.pid, scraped(metrics)),
            }
            if references:
                example = mounts.enter_context(example_mount(example_backing, example_mountpoint, base / "example.log"))
                floor = mounts.enter_context(floor_mount(floor_mountpoint, base / "floor.log"))
                subjects[EXAMPLE] = Subject(EXAMPLE, Target(example_mountpoint, example_backing), example.pid)
                # The do-nothing file system invents entries, so "direct" is a scratch directory it never serves.
                subjects[DO_NOTHING] = Subject(DO_NOTHING, Target(floor_mountpoint, scratch), floor.pid)
            for workload in selected:
                result = run_workload(workload, subjects, settings, repeats or workload.repeats)
                results.append(result.as_json())
                click.echo(result.describe())
        if profile:
            profiles = profile_workloads(selected, base, arguments, settings)
            for name, figures in profiles.items():
                stages = ", ".join(f"{stage} {us:.1f}" for stage, us in figures["microseconds_per_request"].items())
                click.echo(f"{name:22} µs per request: {stages}")
    finally:
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": machine(),
        "settings": asdict(settings),
        "mount_args": mount_args,
        "results": results,
        "profile": profiles,
    }
    output.write_text(json.dumps(report, indent=2) + "\n")
    click.echo(f"results written to {output}")


REFERENCES = (EXAMPLE, DO_NOTHING)
"""The reference targets of benchmarks/references.py, by the name their ratios carry."""


@dataclass(frozen=True)
class Result:
    """One workload's figures per target and run, and the mount's ratios to native and to the references: of the
    medians (what the floors are set against), and paired run by run, with a confidence interval; each server's CPU
    seconds per run, and the requests each target served per run by operation (where they are counted)."""

    workload: str
    unit: str
    runs: dict[str, list[float]]
    floor: float | None
    server_seconds: dict[str, list[float]]
    requests: dict[str, dict[str, float]]

    @property
    def figures(self) -> dict[str, float]:
        """The median figure per target."""
        return {name: statistics.median(values) for name, values in self.runs.items()}

    @property
    def cpu_us_per_request(self) -> float | None:
        """The mount's server CPU per request served (median run), where its metrics counted the requests."""
        return self.cpu_us_per_request_of("mount")

    def cpu_us_per_request_of(self, target: str) -> float | None:
        """A target's server CPU per request served (median run), where its requests were counted."""
        served = sum(self.requests.get(target, {}).values())
        if not served:
            return None
        return statistics.median(self.server_seconds[target]) / served * 1e6

    def paired(self, target: str) -> Interval:
        """The mount's figure over the target's, run by run (the same moment's load on both)."""
        return Interval.of(paired_ratios(self.runs["mount"], self.runs[target]))

    @property
    def ratio(self) -> float:
        return self.ratio_to(NATIVE)

    def ratio_to(self, target: str) -> float:
        return self.figures["mount"] / self.figures[target] if self.figures[target] else 0.0

    def as_json(self) -> dict[str, object]:
        ratios = {f"ratio_to_{name}": self.ratio_to(name) for name in REFERENCES if name in self.figures}
        paired = {f"paired_to_{name}": asdict(self.paired(name)) for name in self.runs if name != "mount"}
        return {
            "workload": self.workload,
            "unit": self.unit,
            **self.figures,
            "ratio": self.ratio,
            **ratios,
            "floor": self.floor,
            "runs": self.runs,
            **paired,
            "server_cpu_seconds": self.server_seconds,
            "mount_requests_per_run": self.requests.get("mount", {}),
            "mount_cpu_us_per_request": self.cpu_us_per_request,
        }

    def per_subject(self) -> dict[str, object]:
        """Per target: every run's figure and their median, its server's CPU seconds per run, the requests per run
        by operation and the CPU µs per request (where counted)."""
        return {
            "workload": self.workload,
            "unit": self.unit,
            "subjects": {
                name: {
                    "runs": runs,
                    "median": statistics.median(runs),
                    "server_cpu_seconds": self.server_seconds.get(name, []),
                    "requests_per_run": self.requests.get(name, {}),
                    "cpu_us_per_request": self.cpu_us_per_request_of(name),
                }
                for name, runs in self.runs.items()
            },
        }

    def describe(self) -> str:
        """One line: the figures, the ratio to native against its floor, the ratios to the references."""
        verdict = "" if self.floor is None else ("ok" if self.ratio >= self.floor else "BELOW FLOOR")
        line = (
            f"{self.workload:22} native {self.figures['native']:>14,.0f} {self.unit:9} "
            f"mount {self.figures['mount']:>14,.0f}  ratio {self.ratio:6.3f}  "
            f"{'' if self.floor is None else f'floor {self.floor:<6}'} {verdict}"
        )
        for name in REFERENCES:
            if name in self.figures:
                line += f"  mount/{name} {self.ratio_to(name):5.2f}"
                interval = self.paired(name)
                if interval.confidence:
                    line += f" (paired {interval.describe()} at {interval.confidence:.0%})"
        if self.cpu_us_per_request is not None:
            line += f"  mount CPU {self.cpu_us_per_request:.0f} µs/request"
        return line


def run_workload(workload: Workload, subjects: dict[str, Subject], settings: Settings, repeats: int) -> Result:
    """One workload on every target that can serve it, interleaved, the order rotated from run to run, so that drift
    and the machine's load hit all of them alike; each server left idle before the next target runs."""
    names = [name for name in subjects if name != DO_NOTHING or workload.name in DO_NOTHING_WORKLOADS]
    runs: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names if subjects[name].server is not None}
    requests: dict[str, Counter[str]] = {name: Counter() for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            subject = subjects[name]
            requests_before, cpu_before = subject.requests(), subject.server_seconds()
            runs[name].append(workload.run(subject.target, settings))
            requests[name].update(subject.requests() - requests_before)
            subject.settle()
            if name in cpu:
                cpu[name].append(subject.server_seconds() - cpu_before)
    per_run = {name: {op: n / repeats for op, n in ops.most_common()} for name, ops in requests.items() if ops}
    return Result(workload.name, workload.unit, runs, workload.floor, cpu, per_run)


if __name__ == "__main__":
    main()
