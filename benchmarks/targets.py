"""``python -m benchmarks.targets``: the request path's targets, each as a paired comparison with its interval.

Wall-clock ratios swing on a shared 2-core machine: two quiet runs of the same
code gave 0.53 and 0.91 for one ratio.  What holds is a paired comparison, so
here every subject is mounted at once (native, pyfuse3's example, the
do-nothing file system, and the interposer bare, bare with ``fuse.xattrs:
false``, by default and by default with 1% of the spans kept), and many short
rounds run every workload on every subject, the order turned each round.  Each
target is the median of its per-round ratios with the sign test's confidence
interval (benchmarks/paired.py) at 95%, and it is *met* when the whole
interval clears it, *missed* when the whole interval falls short, *unsettled*
otherwise (six rounds are the fewest that give 95%).

Beside each ratio: the requests each subject was sent per run, by operation,
counted by the kernel for every subject alike (benchmarks/kernel_requests.py),
and each server's CPU µs per request.  Last, with every mount idle (its
activity spans ended and exported), the CPU each server uses per second and
how often its threads are scheduled in: an idle mount must use none.
``--profile`` then splits the bare and default mounts' time per request by
stage on the targets' workloads (benchmarks/profile.py).
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import click

from interposer.config import TracingConfig
from interposer.telemetry.shipper import FLUSH_INTERVAL

from .__main__ import Result, machine, run_workload
from .kernel_requests import KernelRequests
from .overhead import BASELINE, thread_runs
from .paired import CONFIDENCE, Interval, paired_ratios
from .profile import profile_workloads
from .references import example_mount, floor_mount
from .subjects import (
    DEFAULT,
    DO_NOTHING,
    EXAMPLE,
    MOUNT_CONFIGS,
    NATIVE,
    SAMPLED,
    XATTRS_OFF,
    Subject,
    counted_by_kernel,
    interposer_subject,
)
from .workloads import WORKLOADS, Settings, Target

DIRECT_READS = "rand-read-4K-direct-2jobs"
ALL = tuple(workload.name for workload in WORKLOADS)


@dataclass(frozen=True)
class Goal:
    """``subject``'s figure (higher is better) at least ``minimum`` times ``reference``'s, on each of ``workloads``."""

    says: str
    subject: str
    reference: str
    minimum: float
    workloads: tuple[str, ...]


GOALS = (
    Goal("bare at least 1.0x pyfuse3's example, every workload", BASELINE, EXAMPLE, 1.0, ALL),
    Goal("bare with fuse.xattrs: false at least 1.0x the example, every workload", XATTRS_OFF, EXAMPLE, 1.0, ALL),
    Goal("cold stat at least 0.9 of the do-nothing floor (bare)", BASELINE, DO_NOTHING, 0.9, ("stat",)),
    Goal("default telemetry at least 0.8 of bare on O_DIRECT random reads", DEFAULT, BASELINE, 0.8, (DIRECT_READS,)),
    Goal("default with 1% sampling at least 0.95 of bare on O_DIRECT reads", SAMPLED, BASELINE, 0.95, (DIRECT_READS,)),
)
"""Issue 25's targets for the request path, as same-run ratios of speeds."""
IDLE_SETTLE = TracingConfig().activity_idle_gap + TracingConfig().export_delay + FLUSH_INTERVAL
"""Seconds a mount still has work after its last request (its activity span's end and export): then it is idle."""


def verdict(interval: Interval, minimum: float) -> str:
    """Met when the whole interval clears the target, missed when it all falls short, unsettled otherwise; too few
    rounds for the interval to have the confidence wanted settle nothing."""
    if math.isnan(interval.median):
        return "not measured"
    if interval.confidence < CONFIDENCE:
        return "too few rounds"
    if interval.low >= minimum:
        return "met"
    if interval.high < minimum:
        return "missed"
    return "unsettled"


def judge(results: dict[str, Result]) -> list[dict[str, Any]]:
    """Every goal on every workload it names: the paired ratio, its interval and the verdict."""
    rows = []
    for goal in GOALS:
        for name in goal.workloads:
            if name not in results:
                continue
            runs = results[name].runs
            interval = Interval.of(paired_ratios(runs[goal.subject], runs[goal.reference]))
            rows.append(
                {
                    "goal": goal.says,
                    "workload": name,
                    "subject": goal.subject,
                    "reference": goal.reference,
                    "minimum": goal.minimum,
                    "ratio": asdict(interval),
                    "verdict": verdict(interval, goal.minimum),
                }
            )
    return rows


def idle_use(subjects: dict[str, Subject], seconds: float) -> dict[str, dict[str, float]]:
    """Every server's CPU µs per second and scheduling-ins per second over one window in which nothing is asked of
    any of them."""
    servers = {name: subject.server for name, subject in subjects.items() if subject.server is not None}
    before = {name: thread_runs(pid) for name, pid in servers.items()}
    time.sleep(seconds)  # the window measured: what the servers do unprompted in this long
    use = {}
    for name, pid in servers.items():
        after = thread_runs(pid)
        on_cpu = sum(ns - before[name].get(tid, (0, 0))[0] for tid, (ns, _) in after.items())
        runs = sum(count - before[name].get(tid, (0, 0))[1] for tid, (_, count) in after.items())
        use[name] = {"cpu_us_per_second": on_cpu / 1e3 / seconds, "runs_per_second": runs / seconds}
    return use


def describe(name: str, result: Result) -> str:
    """Per subject: the median figure, the requests per run and the CPU µs per request."""
    lines = [f"{name} ({result.unit}, median of {len(next(iter(result.runs.values())))} rounds)"]
    for subject, runs in result.runs.items():
        requests = result.requests.get(subject, {})
        top = ", ".join(f"{op} {count:,.0f}" for op, count in list(requests.items())[:4])
        cpu = result.cpu_us_per_request_of(subject)
        lines.append(
            f"  {subject:16} {statistics.median(runs):>14,.0f}"
            + (f"  {cpu:6.1f} CPU µs/request" if cpu is not None else "")
            + (f"  per run: {top}" if top else "")
        )
    return "\n".join(lines)


@click.command()
@click.option("--rounds", type=click.IntRange(min=1), default=12, show_default=True, help="Rounds per workload.")
@click.option("--runtime", type=click.IntRange(min=1), default=1, show_default=True, help="Seconds per fio job.")
@click.option("--only", multiple=True, type=click.Choice(ALL), help="Run only these workloads.")
@click.option("--quick", is_flag=True, help="Tiny sizes, two rounds: checks the harness, not the speed.")
@click.option("--idle-seconds", type=click.FloatRange(min=0.5), default=10.0, show_default=True)
@click.option("--profile", is_flag=True, help="Then split the bare and default mounts' time per request by stage.")
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("benchmarks/results/targets.json"),
    show_default=True,
)
def main(
    rounds: int, runtime: int, only: tuple[str, ...], quick: bool, idle_seconds: float, profile: bool, output: Path
) -> None:
    """Every target of the request path, paired within rounds, with requests and CPU per request per subject."""
    settings = replace(Settings.quick() if quick else Settings(), runtime=runtime)
    rounds = 2 if quick else rounds
    selected = [workload for workload in WORKLOADS if not only or workload.name in only]
    base = Path(tempfile.mkdtemp(prefix="interposer-targets-", dir="/dev/shm"))
    results: dict[str, Result] = {}
    profiles: dict[str, Any] = {}
    try:
        with ExitStack() as stack:
            kernel = stack.enter_context(KernelRequests())
            native = base / NATIVE

            def served(name: str, target: Target, server: int) -> Subject:
                return Subject(name, target, server, counted_by_kernel(kernel, target.path))

            example_backing, floor_scratch = base / "example-backing", base / "do-nothing-scratch"
            for directory in (native, example_backing, floor_scratch, base / EXAMPLE, base / DO_NOTHING):
                directory.mkdir()
            example = stack.enter_context(example_mount(example_backing, base / EXAMPLE, base / "example.log"))
            floor = stack.enter_context(floor_mount(base / DO_NOTHING, base / "do-nothing.log"))
            subjects = {
                NATIVE: Subject(NATIVE, Target(native, native)),
                EXAMPLE: served(EXAMPLE, Target(base / EXAMPLE, example_backing), example.pid),
                # The do-nothing file system invents entries: its "direct" side is a scratch directory it never serves.
                DO_NOTHING: served(DO_NOTHING, Target(base / DO_NOTHING, floor_scratch), floor.pid),
            }
            for name in MOUNT_CONFIGS:
                subjects[name] = interposer_subject(name, base / name, stack, kernel)
            for workload in selected:
                results[workload.name] = run_workload(workload, subjects, settings, rounds)
                click.echo(describe(workload.name, results[workload.name]))
            time.sleep(IDLE_SETTLE)  # the mounts finish their last work (activity spans end, export): then idle
            idle = idle_use(subjects, idle_seconds)
        if profile:
            for name in (BASELINE, DEFAULT):
                (base / f"profile-{name}").mkdir()
                arguments = ["--config", str(base / name / "config.yaml")]
                profiles[name] = profile_workloads(selected, base / f"profile-{name}", arguments, settings)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    judged = judge(results)
    click.echo("")
    for row in judged:
        ratio = Interval(**row["ratio"])
        click.echo(
            f"{row['verdict']:>12}  {row['workload']:26} {row['subject']}/{row['reference']} "
            f"{ratio.describe()} at {ratio.confidence:.0%} (target {row['minimum']})  {row['goal']}"
        )
    for name, use in idle.items():
        click.echo(
            f"{'met' if not use['runs_per_second'] else 'missed':>12}  idle {name:20} "
            f"{use['cpu_us_per_second']:.1f} CPU µs/s, scheduled in {use['runs_per_second']:.1f} times/s"
        )
    for name, by_workload in profiles.items():
        for workload_name, figures in by_workload.items():
            stages = ", ".join(f"{stage} {us:.1f}" for stage, us in figures["microseconds_per_request"].items())
            click.echo(f"profile {name:8} {workload_name:26} µs per request: {stages}")
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": machine(),
        "settings": asdict(settings),
        "rounds": rounds,
        "configs": MOUNT_CONFIGS,
        "results": {name: result.per_subject() for name, result in results.items()},
        "targets": judged,
        "idle": idle,
        "profile": profiles,
    }
    output.write_text(json.dumps(report, indent=2) + "\n")
    click.echo(f"results written to {output}")


if __name__ == "__main__":
    main()
