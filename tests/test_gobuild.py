"""tools/gobuild: the table is checked as it is read, a built program reports the table's version, and a second
run builds nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tools import gobuild

from .conftest import require


def built(name: str) -> Path:
    program = gobuild.load()[name]
    require(program.path.is_file(), f"{program.path} (python -m tools.gobuild {name})")
    return program.path


def test_every_program_is_one_module_at_one_exact_version() -> None:
    programs = gobuild.load()
    assert {"helm", "helmfile", "helm-diff", "csi-sanity"} <= set(programs)
    for program in programs.values():
        assert program.module, program
        assert program.version.startswith("v"), program
        assert program.path.is_relative_to(gobuild.TOOLS), "builds go to .tools/, which git ignores"
    outputs = [program.path for program in programs.values()]
    assert len(outputs) == len(set(outputs)), "two programs would write one file"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('[x]\nmodule = "example.com/x"\nversion = "v1.0.0"\ncolour = "red"\n', "[x]: unknown keys ['colour']"),
        ('[x]\nmodule = "example.com/x"\n', "[x]: module and version are required"),
    ],
)
def test_a_bad_entry_is_refused_by_name(entry: str, message: str, tmp_path: Path) -> None:
    table = tmp_path / "gobuild.toml"
    table.write_text(entry)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        gobuild.load(table)


def test_helm_and_helmfile_report_the_versions_of_the_table() -> None:
    table = gobuild.load()
    helm = subprocess.run(
        [built("helm"), "version", "--template", "{{.Version}}"], capture_output=True, text=True, check=False
    )
    assert helm.stdout == table["helm"].version, helm.stderr
    environment = {"HELMFILE_UPGRADE_NOTICE_DISABLED": "1", "PATH": "/usr/bin:/bin"}
    helmfile = subprocess.run(
        [built("helmfile"), "--version"], capture_output=True, text=True, check=False, env=environment
    )
    assert helmfile.stdout.strip() == f"helmfile version {table['helmfile'].version}", helmfile.stderr


def test_a_second_build_finds_the_program_built_and_does_nothing() -> None:
    path = built("csi-sanity")
    program = gobuild.load()["csi-sanity"]
    gobuild.build_one(program)  # builds only if the table or Go changed since
    before = path.stat().st_mtime_ns
    assert "up to date" in gobuild.build_one(program)
    assert path.stat().st_mtime_ns == before
