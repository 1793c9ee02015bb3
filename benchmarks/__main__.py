"""``python -m benchmarks``: time each workload on the native directory and through the mount, in one run.

Both directories are on the same file system; the mount serves a backing
directory beside the native one.  The figure printed per workload is the ratio
mount/native of their speeds, with the floor it must not fall below.
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
from dataclasses import asdict
from pathlib import Path

import click

from interposer.mount.child import MountProcess

from .workloads import WORKLOADS, Settings, Target


def machine() -> dict[str, str]:
    fio = subprocess.run(["fio", "--version"], capture_output=True, text=True, check=False).stdout.strip()
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
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("benchmarks/results/latest.json"),
    show_default=True,
)
def main(workdir: Path | None, quick: bool, only: tuple[str, ...], mount_args: str, output: Path) -> None:
    """Benchmark the interposer against the native directory and print mount/native ratios."""
    settings = Settings.quick() if quick else Settings()
    base = workdir or Path(tempfile.mkdtemp(prefix="interposer-bench-", dir="/dev/shm"))
    native, backing, mountpoint = base / "native", base / "backing", base / "mnt"
    for path in (native, backing, mountpoint):
        path.mkdir(parents=True, exist_ok=True)
    # The mount's spans stay in the scratch directory (the default would be a file in /run per mountpoint).
    (base / "bench.yaml").write_text(f"tracing:\n  file: {base / 'spans.jsonl'}\n")
    arguments = ["--config", str(base / "bench.yaml"), *shlex.split(mount_args)]
    selected = [w for w in WORKLOADS if not only or w.name in only]
    results = []
    try:
        with (
            (base / "interposer.log").open("wb") as log,
            MountProcess(backing, mountpoint, arguments, log=log),
        ):
            for workload in selected:
                native_runs, mount_runs = [], []
                for _ in range(workload.repeats):  # interleaved, so drift hits both sides alike
                    native_runs.append(workload.run(Target(native, native), settings))
                    mount_runs.append(workload.run(Target(mountpoint, backing), settings))
                native_figure, mount_figure = statistics.median(native_runs), statistics.median(mount_runs)
                ratio = mount_figure / native_figure if native_figure else 0.0
                floor = workload.floor
                results.append(
                    {
                        "workload": workload.name,
                        "unit": workload.unit,
                        "native": native_figure,
                        "mount": mount_figure,
                        "ratio": ratio,
                        "floor": floor,
                    }
                )
                verdict = "" if floor is None else ("ok" if ratio >= floor else "BELOW FLOOR")
                click.echo(
                    f"{workload.name:22} native {native_figure:>14,.0f} {workload.unit:9} "
                    f"mount {mount_figure:>14,.0f}  ratio {ratio:6.3f}  "
                    f"{'' if floor is None else f'floor {floor:<6}'} {verdict}"
                )
    finally:
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "settings": asdict(settings), "mount_args": mount_args, "results": results}
    output.write_text(json.dumps(report, indent=2) + "\n")
    click.echo(f"results written to {output}")


if __name__ == "__main__":
    main()
