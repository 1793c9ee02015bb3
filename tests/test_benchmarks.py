"""The benchmark harness works end to end (tiny sizes: this checks the harness, not the speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.overhead import BASELINE, FLOORS, VARIANTS
from benchmarks.workloads import DO_NOTHING_WORKLOADS, WORKLOADS

from .conftest import require_command, require_fuse


def run_benchmark(module: str, *args: str) -> None:
    """Run a benchmark command to completion; it must succeed."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr


def test_quick_benchmark_reports_every_workload(scratch: Path) -> None:
    require_fuse()
    require_command("fio")
    output = scratch / "report.json"
    run_benchmark("benchmarks", "--quick", "--workdir", str(scratch / "work"), "--output", str(output))
    report = json.loads(output.read_text())
    assert [row["workload"] for row in report["results"]] == [w.name for w in WORKLOADS]
    for row, workload in zip(report["results"], WORKLOADS, strict=True):
        assert row["native"] > 0, row
        assert row["mount"] > 0, row
        assert row["ratio"] == row["mount"] / row["native"]
        assert row["floor"] == workload.floor
        # pyfuse3's own passthrough example ran every workload in the same run, the do-nothing one only stat.
        assert row["example"] > 0, row
        assert row["ratio_to_example"] == row["mount"] / row["example"]
        assert ("do_nothing" in row) == (workload.name in DO_NOTHING_WORKLOADS), row
    (stat,) = (row for row in report["results"] if row["workload"] == "stat")
    assert stat["ratio_to_do_nothing"] == stat["mount"] / stat["do_nothing"]
    assert report["machine"]["cpus"]


def test_quick_overhead_benchmark_reports_every_variant(scratch: Path) -> None:
    require_fuse()
    output = scratch / "overhead.json"
    run_benchmark("benchmarks.overhead", "--quick", "--repeats", "1", "--only", "stat", "--output", str(output))
    report = json.loads(output.read_text())
    assert report["floors"] == FLOORS
    ratios = report[f"ratios_to_{BASELINE}"]
    assert list(ratios) == ["stat"]
    assert set(ratios["stat"]) == set(VARIANTS)
    assert ratios["stat"][BASELINE] == 1.0
    assert all(ratio > 0 for ratio in ratios["stat"].values())
