"""The benchmark harness works end to end (tiny sizes: this checks the harness, not the speed)."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.overhead import BASELINE, FLOORS, VARIANTS
from benchmarks.paired import Interval, paired_ratios
from benchmarks.profile import (
    LAYER_STAGE_PREFIX,
    STAGE_ADAPTER,
    STAGE_BACKEND,
    STAGE_CALLER,
    STAGE_FRAMEWORK,
    STAGE_OTHER,
    STAGE_SYSCALLS,
    STAGE_TELEMETRY,
    stage_of,
)
from benchmarks.real import COMMITS, PAIRS, SUBJECTS, RealSettings
from benchmarks.subjects import DEFAULT, DO_NOTHING, EXAMPLE, MOUNT_CONFIGS, NATIVE
from benchmarks.targets import DIRECT_READS, GOALS, verdict
from benchmarks.workloads import DO_NOTHING_WORKLOADS, WORKLOADS, Settings
from interposer.names import OpName

from .conftest import require_command, require_fuse


def run_benchmark(module: str, *args: str) -> None:
    """Run a benchmark command to completion; it must succeed."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr


def test_quick_benchmark_reports_every_workload(scratch: Path) -> None:
    """On tmpfs, the benchmark's default: pyfuse3's example hands O_DIRECT on to the backing file and reads into an
    unaligned buffer, which ext4 refuses (EINVAL, and the example's session ends), so the O_DIRECT workload runs
    on the example only where the backing file system takes any buffer."""
    require_fuse()
    require_command("fio")
    output = scratch / "report.json"
    run_benchmark("benchmarks", "--quick", "--output", str(output))
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
        # Paired ratios, run by run, for every target the mount was compared with.
        assert len(row["runs"]["mount"]) == workload.repeats, row
        for target in ("native", "example"):
            paired = row[f"paired_to_{target}"]
            assert paired["low"] <= paired["median"] <= paired["high"], row
            assert paired["confidence"] == (0.0 if workload.repeats == 1 else 1 - 2 / 2**workload.repeats), row
        # Every server's CPU time per run, and the requests the mount's own metrics counted.
        assert set(row["server_cpu_seconds"]) == {"mount", "example"} | (
            {"do_nothing"} if "do_nothing" in row else set()
        )
        assert all(len(runs) == workload.repeats for runs in row["server_cpu_seconds"].values()), row
        assert row["mount_requests_per_run"], row
    (stat,) = (row for row in report["results"] if row["workload"] == "stat")
    assert stat["ratio_to_do_nothing"] == stat["mount"] / stat["do_nothing"]
    assert stat["mount_requests_per_run"][OpName.LOOKUP] >= Settings.quick().files  # a cold stat is a LOOKUP
    assert stat["mount_cpu_us_per_request"] > 0
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


@pytest.mark.parametrize(
    ("filename", "function", "stage"),
    [
        ("/v/site-packages/trio/_core/_run.py", "unrolled_run", STAGE_FRAMEWORK),
        ("/v/site-packages/pyfuse3/_pyfuse3.py", "wrapper", STAGE_FRAMEWORK),
        ("/src/interposer/fuse/adapter.py", "lookup", STAGE_ADAPTER),
        ("/src/interposer/layers/tracing/layer.py", "__call__", LAYER_STAGE_PREFIX + "tracing"),
        ("/src/interposer/backends/passthrough.py", "read", STAGE_BACKEND),
        ("/src/interposer/telemetry/shipper.py", "add", STAGE_TELEMETRY),
        ("~", "<built-in method posix.pread>", STAGE_SYSCALLS),
        ("~", "<method 'poll' of 'select.epoll' objects>", None),
        ("/src/interposer/names.py", "x", STAGE_OTHER),
        # A library's function or a built-in is part of whatever called it: its time goes to its caller's stage.
        ("/v/site-packages/opentelemetry/sdk/trace/__init__.py", "start_span", STAGE_CALLER),
        ("~", "<method 'get' of 'dict' objects>", STAGE_CALLER),
        ("<attrs generated methods outcome._impl.Value>", "__init__", STAGE_FRAMEWORK),
    ],
)
def test_profile_stages_follow_the_folder_layout(filename: str, function: str, stage: str | None) -> None:
    assert stage_of(filename, function) == stage


def test_quick_profile_splits_a_request_into_stages(scratch: Path) -> None:
    require_fuse()
    output = scratch / "profile.json"
    run_benchmark("benchmarks", "--quick", "--no-references", "--only", "stat", "--profile", "--output", str(output))
    profile = json.loads(output.read_text())["profile"]["stat"]
    # One cold stat is one LOOKUP, counted by the adapter's handler in the profile itself.
    assert profile["requests"]["lookup"] >= Settings.quick().files, profile
    stages = profile["microseconds_per_request"]
    for stage in (STAGE_FRAMEWORK, STAGE_ADAPTER, STAGE_BACKEND, STAGE_SYSCALLS, LAYER_STAGE_PREFIX + "tracing"):
        assert stages.get(stage, 0) > 0, (stage, stages)


def test_quick_real_workloads_run_on_every_subject(scratch: Path) -> None:
    """Tar, git, compileall and SQLite through every subject; what each run produced in the backing directory is
    counted, so a workload that broke (or a mount that served it wrong) shows here, not only as a time."""
    require_fuse()
    output = scratch / "real.json"
    run_benchmark("benchmarks.real", "--quick", "--output", str(output), "--plot", str(scratch / "real.png"))
    assert (scratch / "real.png").read_bytes().startswith(b"\x89PNG")
    report = json.loads(output.read_text())
    settings = RealSettings.quick()
    tree = [path for path in settings.source.rglob("*") if path.is_file() and "__pycache__" not in path.parts]
    produced = {
        "unpack": len(tree),
        "git status": 0,  # a clean checkout, as git reads it through the mount
        "git log -p": COMMITS,
        "compileall": sum(1 for path in tree if path.suffix == ".py"),
        "sqlite": settings.transactions * settings.rows_per_transaction,
    }
    assert [row["workload"] for row in report["results"]] == list(produced)
    for row in report["results"]:
        assert list(row["subjects"]) == list(SUBJECTS), row
        for name, figures in row["subjects"].items():
            assert figures["produced"] == produced[row["workload"]], (row["workload"], name, figures)
            assert figures["median"] > 0, (row["workload"], name)
        for subject, reference in PAIRS:
            # One round: the paired ratio is the ratio of the medians, and it proves nothing (confidence 0).
            interval = row["time_ratios"][f"{subject}/{reference}"]
            medians = row["subjects"][subject]["median"], row["subjects"][reference]["median"]
            assert interval == {
                "median": medians[0] / medians[1],
                "low": interval["median"],
                "high": interval["median"],
                "confidence": 0.0,
            }, (row["workload"], subject, reference)
    sqlite = {row["workload"]: row for row in report["results"]}["sqlite"]["subjects"]
    # Requests are counted where the mount has metrics: every commit fsyncs the WAL, every write is probed.
    requests = sqlite[DEFAULT]["requests_per_run"]
    assert requests[OpName.FSYNC] >= settings.transactions, requests
    assert requests[OpName.GETXATTR] >= requests[OpName.WRITE] / 2, requests
    assert not sqlite[BASELINE]["requests_per_run"]


def test_a_paired_ratio_says_how_sure_it_is() -> None:
    """The sign-test interval: four rounds can only give (min, max), at 87.5%; twenty give 95% from x(6) to x(15)."""
    assert Interval.of([1.0, 4.0, 2.0, 3.0]) == Interval(2.5, 1.0, 4.0, 0.875)
    twenty = Interval.of([float(value) for value in range(20, 0, -1)])
    assert (twenty.low, twenty.high) == (6.0, 15.0)
    assert 0.95 <= twenty.confidence < 0.96
    # A CPU time below the clock's tick is 0: no ratio, no confidence.
    nothing = Interval.of(paired_ratios([0.01], [0.0]))
    assert math.isnan(nothing.median)
    assert nothing.confidence == 0


def test_quick_targets_pair_every_subject_and_count_requests_in_the_kernel(scratch: Path) -> None:
    """benchmarks.targets: every subject mounted at once, each goal judged on its paired ratio, and the requests
    each file system was sent counted by the kernel's tracepoint, the references' included (they have no metrics)."""
    require_fuse()
    require_command("fio")
    output = scratch / "targets.json"
    run_benchmark(
        "benchmarks.targets", "--quick", "--only", "stat", "--only", DIRECT_READS, "--idle-seconds", "1",
        "--output", str(output),
    )  # fmt: skip
    report = json.loads(output.read_text())
    judged = {(row["subject"], row["reference"], row["workload"]) for row in report["targets"]}
    assert judged == {
        (goal.subject, goal.reference, workload)
        for goal in GOALS
        for workload in goal.workloads
        if workload in ("stat", DIRECT_READS)
    }
    for row in report["targets"]:
        assert row["verdict"] == "too few rounds", row  # two rounds: a 50% interval settles nothing
        runs = report["results"][row["workload"]]["subjects"]
        pairs = [a / b for a, b in zip(runs[row["subject"]]["runs"], runs[row["reference"]]["runs"], strict=True)]
        assert row["ratio"]["median"] == statistics.median(pairs), row
    files = Settings.quick().files
    stat = report["results"]["stat"]["subjects"]
    for name in (EXAMPLE, DO_NOTHING, *MOUNT_CONFIGS):
        assert stat[name]["requests_per_run"][OpName.LOOKUP] >= files, (name, stat[name])  # a cold stat: a LOOKUP
        assert stat[name]["cpu_us_per_request"] > 0, (name, stat[name])
    assert not stat[NATIVE]["requests_per_run"]
    reads = report["results"][DIRECT_READS]["subjects"]
    for name in (EXAMPLE, *MOUNT_CONFIGS):
        # O_DIRECT: one READ request per 4 KiB read fio made (fio's IOPS times its runtime, within a second's worth).
        per_run = reads[name]["requests_per_run"][OpName.READ]
        assert per_run == pytest.approx(reads[name]["median"] * report["settings"]["runtime"], rel=0.5), reads[name]
    assert set(report["idle"]) == {EXAMPLE, DO_NOTHING, *MOUNT_CONFIGS}


@pytest.mark.parametrize(
    ("ratios", "expected"),
    [
        ([1.1, 1.2, 1.3, 1.2, 1.1, 1.4], "met"),
        ([0.5, 0.6, 0.7, 0.6, 0.5, 0.8], "missed"),
        ([0.9, 1.1, 1.0, 1.2, 0.8, 1.0], "unsettled"),
        ([1.5, 1.6], "too few rounds"),
        ([], "not measured"),
    ],
)
def test_a_target_is_met_only_when_its_whole_interval_clears_it(ratios: list[float], expected: str) -> None:
    assert verdict(Interval.of(ratios), 1.0) == expected
