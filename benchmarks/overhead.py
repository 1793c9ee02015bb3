"""``python -m benchmarks.overhead``: what each telemetry layer costs, as throughput ratios to a mount without any.

Each variant is a mount configuration; every workload runs through the
baseline mount and through each variant, interleaved, median of the repeats.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import click

from interposer.mount.child import MountProcess

from .workloads import WORKLOADS, Settings, Target

BASELINE = "bare"
_NO_TRACING = "tracing:\n  enabled: false\n"
_NO_METRICS = "metrics:\n  enabled: false\n"
VARIANTS = {
    BASELINE: _NO_TRACING + _NO_METRICS,
    "metrics": _NO_TRACING + "metrics:\n  exporters: [prometheus]\n  prometheus_port: 0\n",
    "traced-100%": _NO_METRICS + "tracing:\n  file: {work}/spans.jsonl\n  sample_ratio: 1.0\n",
    "traced-1%": _NO_METRICS + "tracing:\n  file: {work}/spans.jsonl\n  sample_ratio: 0.01\n",
}
"""Mount configurations: the bare pipeline (no telemetry layer), and each layer alone."""
FLOORS = {"metrics": 0.9, "traced-100%": 0.75, "traced-1%": 0.9}
"""Throughput the variant must keep, as a share of the bare mount's."""
MEASURED = ("rand-read-4K-1job", "create-stat-unlink", "stat")


def cpu_ticks(pid: int) -> int:
    """CPU time of a process and its children (a mount's span export process), in clock ticks; exited threads'
    time included."""
    ticks = 0
    for process in _tree(pid):
        try:
            fields = (process / "stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            continue  # it has just exited
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks


def thread_runs(pid: int) -> dict[int, tuple[int, int]]:
    """Per thread of a process and its children: (nanoseconds on a CPU, times it was scheduled in), from the
    scheduler's own counts (``schedstat``): far finer than ``cpu_ticks``, to show that an idle mount does not run."""
    runs = {}
    for process in _tree(pid):
        for task in _listing(process / "task"):
            try:
                on_cpu, _, slices = (task / "schedstat").read_text().split()
            except FileNotFoundError:
                continue
            runs[int(task.name)] = (int(on_cpu), int(slices))
    return runs


def _tree(pid: int) -> list[Path]:
    """``/proc/PID`` of a process and of its descendants."""
    processes = [Path(f"/proc/{pid}")]
    for task in _listing(processes[0] / "task"):
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:
            continue
        for child in children:
            processes += _tree(int(child))
    return processes


def _listing(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []


def wait_until_idle(server: int, quiet: float = 0.3, timeout: float = 15.0) -> None:
    """Let a mount's server (process id) finish what a run left it (span export, forgets) before the next mount is
    timed.

    Otherwise a traced mount's span export process, still encoding the last
    run's spans, would steal CPU from whichever variant runs next.
    """
    deadline = time.monotonic() + timeout
    before = cpu_ticks(server)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu_ticks(server)
        if now == before:
            return
        before = now


@click.command()
@click.option("--quick", is_flag=True, help="Tiny sizes: checks the harness, not the speed.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--only", multiple=True, type=click.Choice(MEASURED), help="Run only these workloads.")
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("benchmarks/results/overhead.json"),
    show_default=True,
)
def main(quick: bool, repeats: int, only: tuple[str, ...], output: Path) -> None:
    """The bare mount against metrics alone and tracing alone at 100% and at 1%."""
    settings = Settings.quick() if quick else Settings()
    base = Path(tempfile.mkdtemp(prefix="interposer-overhead-", dir="/dev/shm"))
    results: dict[str, dict[str, float]] = {}
    try:
        mounts = {}
        for name, template in VARIANTS.items():
            work = base / name
            (work / "backing").mkdir(parents=True)
            (work / "mnt").mkdir()
            (work / "config.yaml").write_text(template.format(work=work))
            mounts[name] = MountProcess(
                work / "backing", work / "mnt", ["--config", str(work / "config.yaml")], log=(work / "log").open("wb")
            ).start()
        try:
            for workload in (w for w in WORKLOADS if w.name in (only or MEASURED)):
                runs: dict[str, list[float]] = {name: [] for name in VARIANTS}
                for _ in range(repeats):
                    for name, mount in mounts.items():
                        runs[name].append(workload.run(Target(mount.mountpoint, mount.backing), settings))
                        assert mount.process is not None
                        wait_until_idle(mount.process.pid)
                medians = {name: statistics.median(values) for name, values in runs.items()}
                results[workload.name] = {name: medians[name] / medians[BASELINE] for name in VARIANTS}
                line = "  ".join(
                    f"{name} {ratio:5.3f}{'' if name not in FLOORS else (' ok' if ratio >= FLOORS[name] else ' BELOW')}"
                    for name, ratio in results[workload.name].items()
                )
                click.echo(f"{workload.name:22} {line}")
        finally:
            for mount in mounts.values():
                mount.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"floors": FLOORS, f"ratios_to_{BASELINE}": results}, indent=2) + "\n")
    click.echo(f"results written to {output}")


if __name__ == "__main__":
    main()
