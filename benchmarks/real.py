"""``python -m benchmarks.real``: what a user feels, on real tools, natively and through every kind of mount at once.

The microbenchmarks (``python -m benchmarks``) time one kind of request at a
time; a user runs tar, git, Python and SQLite, whose mixes of requests and of
their own CPU decide how much a mount slows them.  Each workload here runs a
real program on a real tree: Python's standard library as the interpreter
ships it (CPython's ``Lib/``: some 2,100 files, bytecode left out), which needs
nothing from outside the machine.

* ``unpack``: GNU tar extracts a gzipped tarball of the tree;
* ``git status`` and ``git log -p``: a repository of the tree with a few
  commits, packed as a clone would be;
* ``compileall``: ``python -m compileall`` of a fresh copy of the tree;
* ``sqlite``: Python's sqlite3 inserting rows in WAL mode with
  ``synchronous=FULL``, one fsync of the WAL per transaction.

Subjects (all mounted at once, each over a backing directory beside the
native one): the native directory, pyfuse3's passthrough example
(benchmarks/references.py), the interposer with no telemetry (``bare``), the
same with ``fuse.xattrs: false`` (no security.capability probe before each
write), and the default configuration (metrics and a span file at 100%).

Every round runs every workload on every subject, the subjects' order rotated
from round to round, so that whatever load the machine carries falls on all of
them alike.  Ratios are paired: a subject's time over native's (or the
example's) in the same round, then their median and its sign-test confidence
interval (benchmarks/paired.py); each server's CPU time per run is paired the
same way, and the default mount's metrics count its requests.  Each run counts
what it produced in the backing directory (files unpacked, .pyc files, rows),
and a subject that disagrees with the others fails the benchmark: a broken
mount cannot pass as a fast one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import click

from .__main__ import machine
from .overhead import BASELINE
from .paired import Interval, paired_ratios
from .references import example_mount
from .subjects import DEFAULT, EXAMPLE, NATIVE, XATTRS_OFF, Subject, interposer_subject
from .workloads import Target

MOUNTS = (BASELINE, XATTRS_OFF, DEFAULT)
"""The interposer's subjects (benchmarks/subjects.py): no telemetry, no telemetry and no xattrs, the defaults."""
SUBJECTS = (NATIVE, EXAMPLE, *MOUNTS)
SERVERS = SUBJECTS[1:]
"""The subjects served by a process of their own, whose CPU time is measured."""
LABELS = {
    NATIVE: "native",
    EXAMPLE: "pyfuse3 example",
    BASELINE: "bare",
    XATTRS_OFF: "bare, xattrs off",
    DEFAULT: "default",
}
COLOURS = {NATIVE: "#7f7f7f", EXAMPLE: "#ff7f0e", BASELINE: "#1f77b4", XATTRS_OFF: "#9ecae1", DEFAULT: "#2ca02c"}
COMMITS = 4
"""Commits in the git workloads' repository: the tree, then three that each change every tenth module."""
TREE_IGNORED = ("__pycache__", "site-packages", "dist-packages", "config-*", "lib-dynload")
"""Left out of the copy of the standard library: bytecode, installed packages, the static library and extensions."""
GIT = ("git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "gc.auto=0")


@dataclass(frozen=True)
class RealSettings:
    """What the workloads work on, and how many rounds."""

    source: Path = Path(sysconfig.get_paths()["stdlib"])
    rounds: int = 6
    """Six rounds are the fewest whose paired ratios have a 95% interval (min to max: 96.9%)."""
    transactions: int = 1000
    rows_per_transaction: int = 10

    @classmethod
    def quick(cls) -> RealSettings:
        """One package of the standard library, one round: checks the harness in seconds, not the speed."""
        return cls(source=cls.source / "json", rounds=1, transactions=20)


@dataclass(frozen=True)
class Inputs:
    """What every run starts from, made once outside every subject."""

    tree: Path
    tarball: Path
    repository: Path
    settings: RealSettings


@dataclass(frozen=True)
class Outcome:
    """One run: its wall time, and the count of what it produced, which must be the same on every subject."""

    seconds: float
    produced: int


def _timed(command: list[str], cwd: Path) -> tuple[float, bytes]:
    """Wall time of a command (start-up included, as a user waits for it) and its output, as bytes: a diff of the
    standard library is not all UTF-8."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode not in (0, 1):  # compileall exits 1 for a module that does not compile: ours has some
        raise RuntimeError(
            f"{command} in {cwd} exited {result.returncode}: {result.stderr[-2000:].decode(errors='replace')}"
        )
    return seconds, result.stdout


def _files(directory: Path, pattern: str = "*") -> int:
    return sum(1 for path in directory.rglob(pattern) if path.is_file())


def unpack(scratch: Target, inputs: Inputs) -> Outcome:
    """GNU tar extracts the tarball; produced: the files in the backing directory."""
    seconds, _ = _timed(["tar", "-xzf", str(inputs.tarball)], scratch.path)
    return Outcome(seconds, _files(scratch.direct))


def git_status(scratch: Target, inputs: Inputs) -> Outcome:
    """``git status`` of a clean checkout; produced: the lines it prints (none, or the mount served a wrong tree)."""
    seconds, output = _timed([*GIT, "status", "--porcelain"], scratch.path)
    return Outcome(seconds, len(output.splitlines()))


def git_log(scratch: Target, inputs: Inputs) -> Outcome:
    """``git log -p``: every commit with its diff, read from the pack; produced: the commits shown."""
    seconds, output = _timed([*GIT, "log", "-p"], scratch.path)
    return Outcome(seconds, sum(1 for line in output.splitlines() if line.startswith(b"commit ")))


def copy_tree(direct: Path, inputs: Inputs) -> None:
    """A fresh copy of the tree for compileall, made directly in the backing directory before the clock starts."""
    shutil.copytree(inputs.tree, direct / inputs.tree.name, symlinks=True)


def compileall(scratch: Target, inputs: Inputs) -> Outcome:
    """``python -m compileall`` of the copy; produced: the .pyc files in the backing directory."""
    seconds, _ = _timed([sys.executable, "-m", "compileall", "-q", inputs.tree.name], scratch.path)
    return Outcome(seconds, _files(scratch.direct, "*.pyc"))


def sqlite_inserts(scratch: Target, inputs: Inputs) -> Outcome:
    """Rows inserted in transactions, WAL mode, synchronous=FULL (an fsync per commit); produced: the rows on disk."""
    settings = inputs.settings
    row = "x" * 100
    started = time.perf_counter()
    connection = sqlite3.connect(scratch.path / "bench.db", isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, payload TEXT)")
        for _ in range(settings.transactions):
            connection.execute("BEGIN")
            connection.executemany("INSERT INTO rows (payload) VALUES (?)", [(row,)] * settings.rows_per_transaction)
            connection.execute("COMMIT")
    finally:
        connection.close()
    seconds = time.perf_counter() - started
    with closing(sqlite3.connect(scratch.direct / "bench.db")) as check:
        (rows,) = check.execute("SELECT count(*) FROM rows").fetchone()
    return Outcome(seconds, int(rows))


@dataclass(frozen=True)
class RealWorkload:
    """A workload and where it runs: a fresh directory per run (filled by ``prepare``), or the subject's repository."""

    name: str
    run: Callable[[Target, Inputs], Outcome]
    produced: str
    """What ``Outcome.produced`` counts, in words."""
    prepare: Callable[[Path, Inputs], None] | None = None
    in_repository: bool = False


WORKLOADS = (
    RealWorkload("unpack", unpack, "files unpacked"),
    RealWorkload("git status", git_status, "lines git status printed", in_repository=True),
    RealWorkload("git log -p", git_log, "commits shown", in_repository=True),
    RealWorkload("compileall", compileall, ".pyc files written", prepare=copy_tree),
    RealWorkload("sqlite", sqlite_inserts, "rows"),
)


def make_inputs(base: Path, settings: RealSettings) -> Inputs:
    """The tree, its tarball and its repository, made once in ``base`` (outside every subject)."""
    tree = base / "inputs" / settings.source.name
    shutil.copytree(settings.source, tree, symlinks=True, ignore=shutil.ignore_patterns(*TREE_IGNORED))
    tarball = base / "inputs" / f"{tree.name}.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(tree, arcname=tree.name)
    repository = base / "inputs" / "repository"
    shutil.copytree(tree, repository, symlinks=True)
    subprocess.run([*GIT, "init", "--quiet"], cwd=repository, check=True)
    modules = sorted(repository.rglob("*.py"))
    for commit in range(COMMITS):
        for module in modules[commit - 1 :: 10] if commit else ():
            with module.open("a") as handle:
                handle.write(f"# revision {commit}\n")
        subprocess.run([*GIT, "add", "--all"], cwd=repository, check=True)
        subprocess.run([*GIT, "commit", "--quiet", "-m", f"revision {commit}"], cwd=repository, check=True)
    subprocess.run([*GIT, "gc", "--quiet"], cwd=repository, check=True)
    return Inputs(tree, tarball, repository, settings)


def give_repository(subject: Subject, inputs: Inputs) -> None:
    """A copy of the repository in the subject's backing directory, its index refreshed once through the subject.

    The copy has new inode numbers and times, so the first ``git status``
    rewrites the index; a user's repository has had that done long ago.
    """
    shutil.copytree(inputs.repository, subject.target.direct / "repository", symlinks=True)
    _timed([*GIT, "status", "--porcelain"], subject.target.path / "repository")


def run_once(
    workload: RealWorkload, subject: Subject, inputs: Inputs, round_: int
) -> tuple[Outcome, float, Counter[str]]:
    """One run of a workload on a subject, the server's CPU seconds for it (the span export included, so counted
    once the mount is idle again), and the requests the mount counted for it."""
    if workload.in_repository:
        scratch = Target(subject.target.path / "repository", subject.target.direct / "repository")
    else:
        name = f"{workload.name}-{round_}"
        scratch = Target(subject.target.path / name, subject.target.direct / name)
        scratch.direct.mkdir()
        if workload.prepare is not None:
            workload.prepare(scratch.direct, inputs)
    before, cpu_before = subject.requests(), subject.server_seconds()
    try:
        outcome = workload.run(scratch, inputs)
        requests = subject.requests() - before
        subject.settle()
        return outcome, subject.server_seconds() - cpu_before, requests
    finally:
        if not workload.in_repository:
            shutil.rmtree(scratch.direct)


PAIRS = (
    (EXAMPLE, NATIVE),
    (BASELINE, NATIVE),
    (XATTRS_OFF, NATIVE),
    (DEFAULT, NATIVE),
    (BASELINE, EXAMPLE),
    (XATTRS_OFF, EXAMPLE),
    (DEFAULT, EXAMPLE),
    (XATTRS_OFF, BASELINE),
    (DEFAULT, BASELINE),
)
"""The comparisons reported: each subject against native and the example, and each switch against bare."""


def ratio(figures: dict[str, list[float]], subject: str, reference: str) -> Interval:
    """The subject's figure (a time) over the reference's, paired by round: median and confidence interval."""
    return Interval.of(paired_ratios(figures[subject], figures[reference]))


@dataclass
class WorkloadResult:
    """Every round's seconds and server CPU seconds per subject, what each run produced, and the requests per run
    by operation."""

    workload: RealWorkload
    seconds: dict[str, list[float]]
    server_seconds: dict[str, list[float]]
    produced: dict[str, int]
    requests: dict[str, dict[str, float]]

    def as_json(self) -> dict[str, object]:
        subjects = {}
        for subject, seconds in self.seconds.items():
            subjects[subject] = {
                "seconds": seconds,
                "median": statistics.median(seconds),
                "min": min(seconds),
                "max": max(seconds),
                "server_cpu_seconds": self.server_seconds[subject],
                "server_cpu_median": statistics.median(self.server_seconds[subject]),
                "produced": self.produced[subject],
                "requests_per_run": self.requests.get(subject, {}),
            }
        ratios = {
            f"{subject}/{reference}": asdict(ratio(self.seconds, subject, reference)) for subject, reference in PAIRS
        }
        return {
            "workload": self.workload.name,
            "produced": self.workload.produced,
            "subjects": subjects,
            "time_ratios": ratios,
        }


def measure(
    subjects: list[Subject], inputs: Inputs, workloads: tuple[RealWorkload, ...], echo: Callable[[str], None]
) -> list[WorkloadResult]:
    """Every round runs every workload on every subject, the subjects' order rotated each round."""
    results = [
        WorkloadResult(w, {s.name: [] for s in subjects}, {s.name: [] for s in subjects}, {}, {}) for w in workloads
    ]
    counted: dict[tuple[str, str], Counter[str]] = {}
    rounds = inputs.settings.rounds
    for round_ in range(rounds):
        order = subjects[round_ % len(subjects) :] + subjects[: round_ % len(subjects)]
        for result in results:
            for subject in order:
                outcome, server_seconds, requests = run_once(result.workload, subject, inputs, round_)
                result.seconds[subject.name].append(outcome.seconds)
                result.server_seconds[subject.name].append(server_seconds)
                result.produced[subject.name] = outcome.produced
                if len(set(result.produced.values())) > 1:
                    raise RuntimeError(f"{result.workload.name}: {result.workload.produced} differ: {result.produced}")
                counted.setdefault((result.workload.name, subject.name), Counter()).update(requests)
            echo(
                f"round {round_ + 1}/{rounds} {result.workload.name:12} "
                + "  ".join(f"{name} {values[-1]:.3f}s" for name, values in result.seconds.items())
            )
    for result in results:
        for subject in subjects:
            total = counted[result.workload.name, subject.name]
            if total:
                result.requests[subject.name] = {op: count / rounds for op, count in total.most_common()}
    return results


@contextmanager
def mounted_subjects(base: Path) -> Iterator[list[Subject]]:
    """Every subject, each interposer mount and the example over a backing directory of its own, all mounted."""
    with ExitStack() as stack:
        native = base / NATIVE
        native.mkdir()
        subjects = [Subject(NATIVE, Target(native, native))]
        backing, mountpoint = base / f"{EXAMPLE}-backing", base / EXAMPLE
        backing.mkdir()
        mountpoint.mkdir()
        example = stack.enter_context(example_mount(backing, mountpoint, base / f"{EXAMPLE}.log"))
        subjects.append(Subject(EXAMPLE, Target(mountpoint, backing), example.pid))
        subjects += [interposer_subject(name, base / name, stack) for name in MOUNTS]
        yield subjects


def load() -> dict[str, float]:
    """The load averages (1, 5, 15 minutes): the machine's other work, which every figure shares."""
    one, five, fifteen = os.getloadavg()
    return {"1m": one, "5m": five, "15m": fifteen}


def _figures(row: dict[str, Any], figure: str) -> dict[str, list[float]]:
    """A workload's ``figure`` (``seconds``, ``server_cpu_seconds``) per subject and round, as the report holds it."""
    return {subject: figures[figure] for subject, figures in row["subjects"].items()}


def _ratio_table(results: list[dict[str, Any]], figure: str, pairs: tuple[tuple[str, str], ...], title: str) -> str:
    """Rows of pairs, columns of workloads: the paired ratio of ``figure``, median [interval], and its confidence."""
    names = [row["workload"] for row in results]
    lines = [f"| {title} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    confidence = 0.0
    for subject, reference in pairs:
        intervals = [ratio(_figures(row, figure), subject, reference) for row in results]
        confidence = intervals[0].confidence
        described = " | ".join(interval.describe() for interval in intervals)
        lines.append(f"| {LABELS[subject]} / {LABELS[reference]} | {described} |")
    note = f"Median of the rounds' ratios (below 1: less) [{confidence:.1%} confidence interval]."
    return "\n".join([note, "", *lines])


def markdown(report: dict[str, Any]) -> str:
    """The docs' tables: each subject's median seconds (range over rounds) and the paired ratios of times; each
    server's CPU seconds per run (with the default mount's requests) and their paired ratios."""
    results = report["results"]
    times = ["| workload | " + " | ".join(LABELS[s] for s in SUBJECTS) + " |", "|---" * (len(SUBJECTS) + 1) + "|"]
    for row in results:
        cells = [f"{f['median']:.2f} s ({f['min']:.2f}-{f['max']:.2f})" for f in (row["subjects"][s] for s in SUBJECTS)]
        times.append(f"| {row['workload']} | " + " | ".join(cells) + " |")
    cpu = [
        "| server CPU per run | " + " | ".join(LABELS[s] for s in SERVERS) + " | default: requests | µs per request |",
        "|---" * (len(SERVERS) + 3) + "|",
    ]
    for row in results:
        figures = [row["subjects"][subject]["server_cpu_seconds"] for subject in SERVERS]
        cells = [f"{statistics.median(f):.2f} s ({min(f):.2f}-{max(f):.2f})" for f in figures]
        requests = sum(row["subjects"][DEFAULT]["requests_per_run"].values())
        cpu_seconds = statistics.median(row["subjects"][DEFAULT]["server_cpu_seconds"])
        per_request = cpu_seconds / requests * 1e6 if requests else math.nan
        cpu.append(f"| {row['workload']} | " + " | ".join(cells) + f" | {requests:,.0f} | {per_request:.0f} |")
    server_pairs = tuple(pair for pair in PAIRS if NATIVE not in pair)
    return (
        "\n\n".join(
            [
                "\n".join(times),
                _ratio_table(results, "seconds", PAIRS, "time ratio"),
                "\n".join(cpu),
                _ratio_table(results, "server_cpu_seconds", server_pairs, "server CPU ratio"),
            ]
        )
        + "\n"
    )


def _bars(axis: Any, row: dict[str, Any], figure: str, subjects: tuple[str, ...], reference: str) -> float:
    """One panel: each subject's median of ``figure`` (a list per round in the report), whiskers from min to max,
    labelled with its paired ratio to ``reference``; returns the top whisker's height."""
    values = {subject: row["subjects"][subject][figure] for subject in subjects}
    positions = [SUBJECTS.index(subject) for subject in subjects]
    medians = [statistics.median(values[subject]) for subject in subjects]
    low = [median - min(values[subject]) for median, subject in zip(medians, subjects, strict=True)]
    high = [max(values[subject]) - median for median, subject in zip(medians, subjects, strict=True)]
    axis.bar(positions, medians, yerr=[low, high], capsize=3, color=[COLOURS[subject] for subject in subjects])
    for position, subject, median, above in zip(positions, subjects, medians, high, strict=True):
        if subject != reference:
            paired = Interval.of(paired_ratios(values[subject], values[reference])).median
            label = f"{paired:.{2 if paired < 10 else 1}f}\N{MULTIPLICATION SIGN}"
            axis.annotate(label, (position, median + above), ha="center", va="bottom", fontsize=7)
    axis.set_xticks(positions, [LABELS[subject] for subject in subjects], rotation=40, ha="right", fontsize=8)
    axis.set_xlim(-0.6, len(SUBJECTS) - 0.4)  # every panel's subjects in the same places
    return float(max(median + above for median, above in zip(medians, high, strict=True)))


def plot(report: dict[str, Any], path: Path) -> None:
    """Time per workload against configuration, and the servers' CPU time: one column per workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    figure, axes = plt.subplots(2, len(results), figsize=(3.2 * len(results), 7.6), squeeze=False)
    for column, row in enumerate(results):
        wall, cpu = axes[0][column], axes[1][column]
        wall.set_ylim(0, _bars(wall, row, "seconds", SUBJECTS, NATIVE) * 1.12)  # room for the labels
        cpu.set_ylim(0, _bars(cpu, row, "server_cpu_seconds", SERVERS, EXAMPLE) * 1.12)
        wall.set_title(row["workload"])
        if column == 0:
            wall.set_ylabel("wall time, s (labels: \N{MULTIPLICATION SIGN} native)")
            cpu.set_ylabel("server CPU, s (labels: \N{MULTIPLICATION SIGN} example)")
    rounds, load_seen = report["settings"]["rounds"], report["load"]
    figure.suptitle(
        f"Real workloads: medians of {rounds} interleaved rounds, whiskers min to max, labels paired by round; "
        f"load average {load_seen['before']['1m']:.1f} before, {load_seen['after']['1m']:.1f} after, "
        f"on {report['machine']['cpus']} cores",
        fontsize=9,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


@click.command()
@click.option("--quick", is_flag=True, help="One package of the standard library, one round: checks the harness.")
@click.option("--rounds", type=click.IntRange(min=1), default=None, help="Rounds [default: 6, or 1 with --quick].")
@click.option("--only", multiple=True, type=click.Choice([w.name for w in WORKLOADS]), help="Run only these.")
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("benchmarks/results/real.json"),
    show_default=True,
)
@click.option("--plot", "plot_path", type=click.Path(path_type=Path, dir_okay=False), help="Also draw the PNG here.")
@click.option("--replot", is_flag=True, help="Draw --plot and print the table from --output, without measuring.")
def main(
    quick: bool, rounds: int | None, only: tuple[str, ...], output: Path, plot_path: Path | None, replot: bool
) -> None:
    """Time tar, git, compileall and SQLite natively, through pyfuse3's example and through the interposer."""
    if not replot:
        settings = RealSettings.quick() if quick else RealSettings()
        if rounds is not None:
            settings = replace(settings, rounds=rounds)
        workloads = tuple(w for w in WORKLOADS if not only or w.name in only)
        base = Path(tempfile.mkdtemp(prefix="interposer-real-", dir="/dev/shm"))
        try:
            load_before = load()
            inputs = make_inputs(base, settings)
            with mounted_subjects(base) as subjects:
                if any(w.in_repository for w in workloads):
                    for subject in subjects:
                        give_repository(subject, inputs)
                results = measure(subjects, inputs, workloads, click.echo)
            report: dict[str, Any] = {
                "machine": machine(),
                "settings": {**asdict(settings), "source": str(settings.source)},
                "load": {"before": load_before, "after": load()},
                "results": [result.as_json() for result in results],
            }
        finally:
            shutil.rmtree(base, ignore_errors=True)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n")
        click.echo(f"results written to {output}")
    report = json.loads(output.read_text())
    click.echo(markdown(report))
    if plot_path is not None:
        plot(report, plot_path)
        click.echo(f"plot written to {plot_path}")


if __name__ == "__main__":
    main()
