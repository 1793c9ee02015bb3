"""A broad third-party file-system test suite, run in a native directory and inside the mount.

CPython's own regression tests for os, posix, shutil, io, pathlib, tarfile,
zipfile, mmap and friends are thousands of real POSIX file-system checks,
written by others and shipped with the interpreter.  ``--tempdir`` makes
regrtest work inside the directory under test.  Every test case must end the
same way in both places: pass, fail, error or skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from .conftest import MountFactory, require

SUITES = [
    "test_os",
    "test_posix",
    "test_shutil",
    "test_fileio",
    "test_io",
    "test_pathlib",
    "test_tempfile",
    "test_glob",
    "test_mmap",
    "test_tarfile",
    "test_zipfile",
    "test_largefile",
    "test_stat",
    "test_genericpath",
    "test_posixpath",
    "test_filecmp",
    "test_zipimport",
    "test_compileall",
    "test_py_compile",
    "test_import",
]


def run_suite(workdir: Path, report: Path) -> dict[str, str]:
    """Run the suites with their scratch files in ``workdir``; return each case's outcome."""
    subprocess.run(
        [sys.executable, "-m", "test", "--tempdir", str(workdir), "--junit-xml", str(report), *SUITES],
        cwd=workdir,
        capture_output=True,
        check=False,
        timeout=900,
    )
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).iter("testcase"):
        name = f"{case.get('classname', '')}.{case.get('name', '')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = child.tag
        outcomes[name] = outcome
    return outcomes


def test_cpython_file_system_suites_give_the_same_results(mount_factory: MountFactory, scratch: Path) -> None:
    require(Path(sys.executable).exists() and _has_regrtest(), "CPython's test package (Lib/test)")
    native = scratch / "native"
    native.mkdir()
    mount = mount_factory()
    expected = run_suite(native, scratch / "native.xml")
    actual = run_suite(mount.mountpoint, scratch / "mount.xml")
    assert len(expected) > 3000, f"only {len(expected)} cases ran natively"
    assert sum(outcome == "passed" for outcome in expected.values()) > 2500
    differences = {
        name: (expected.get(name), actual.get(name))
        for name in expected.keys() | actual.keys()
        if expected.get(name) != actual.get(name)
    }
    assert not differences, f"{len(differences)} cases differ (native, mount): {sorted(differences.items())[:40]}"


def _has_regrtest() -> bool:
    return (
        subprocess.run(
            [sys.executable, "-c", "import test.regrtest, test.test_os"],
            capture_output=True,
            check=False,
            env=os.environ,
        ).returncode
        == 0
    )
