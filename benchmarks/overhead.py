"""``python -m benchmarks.overhead``: what a telemetry layer costs, as throughput ratios to a mount without it.

Each variant is a mount configuration; every workload runs through the
baseline mount and through each variant, interleaved, median of the repeats.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from pathlib import Path

import click

from interposer.process import MountProcess

from .workloads import WORKLOADS, Settings, Target

VARIANTS = {
    "untraced": "tracing:\n  enabled: false\n",
    "traced-100%": "tracing:\n  file: {work}/spans.jsonl\n  sample_ratio: 1.0\n",
    "traced-1%": "tracing:\n  file: {work}/spans.jsonl\n  sample_ratio: 0.01\n",
}
FLOORS = {"traced-100%": 0.75, "traced-1%": 0.9}
"""Throughput the variant must keep, as a share of the untraced mount's."""
MEASURED = ("rand-read-4K-1job", "create-stat-unlink", "stat")


@click.command()
@click.option("--quick", is_flag=True, help="Tiny sizes: checks the harness, not the speed.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("benchmarks/results/overhead.json"),
    show_default=True,
)
def main(quick: bool, repeats: int, output: Path) -> None:
    """Tracing off against tracing on at 100% and at 1%."""
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
            for workload in (w for w in WORKLOADS if w.name in MEASURED):
                runs: dict[str, list[float]] = {name: [] for name in VARIANTS}
                for _ in range(repeats):
                    for name, mount in mounts.items():
                        runs[name].append(workload.run(Target(mount.mountpoint, mount.backing), settings))
                medians = {name: statistics.median(values) for name, values in runs.items()}
                results[workload.name] = {name: medians[name] / medians["untraced"] for name in VARIANTS}
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
    output.write_text(json.dumps({"floors": FLOORS, "ratios_to_untraced": results}, indent=2) + "\n")
    click.echo(f"results written to {output}")


if __name__ == "__main__":
    main()
