"""The span export process polls only where CPU is free to take: how a CPU cap is recognised."""

from __future__ import annotations

from pathlib import Path

import pytest

from interposer.tracing.cpus import cpu_capped


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("membership", "files", "capped"),
    [
        ("0::/pod/app\n", {"pod/app/cpu.max": "max 100000\n", "pod/cpu.max": "max 100000\n"}, False),
        ("0::/pod/app\n", {"pod/app/cpu.max": "50000 100000\n"}, True),
        ("0::/pod/app\n", {"pod/app/cpu.max": "max 100000\n", "pod/cpu.max": "200000 100000\n"}, True),
        ("4:memory:/x\n1:cpu,cpuacct:/pod\n0::/\n", {"cpu,cpuacct/pod/cpu.cfs_quota_us": "-1\n"}, False),
        ("1:cpu,cpuacct:/pod/app\n0::/\n", {"cpu,cpuacct/pod/cpu.cfs_quota_us": "50000\n"}, True),
        ("0::/\n", {}, False),
    ],
)
def test_a_cpu_quota_anywhere_above_the_process_counts(
    tmp_path: Path, membership: str, files: dict[str, str], capped: bool
) -> None:
    cgroups = _tree(tmp_path / "cgroup", files)
    (tmp_path / "cgroup").mkdir(exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(membership)
    assert cpu_capped(proc, cgroups) is capped


def test_a_quota_outside_the_hierarchy_is_not_read(tmp_path: Path) -> None:
    _tree(tmp_path, {"cpu.max": "1 100000\n", "cgroup/pod/cpu.max": "max 100000\n"})
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("0::/pod\n")
    assert cpu_capped(proc, tmp_path / "cgroup") is False
