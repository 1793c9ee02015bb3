"""kubernetes-csi's csi-sanity, the full suite, against the driver as it is deployed: 0 failures.

csi-sanity is built from its Go module (csi-test v5) by ``python -m tools.gobuild csi-sanity``, at the
version tools/gobuild.toml records. It runs in two shapes:

- ``all``: one ``interposer csi --mode all`` serves Identity, Node and Controller;
- ``node``: the chart's topology, a node plugin (``--mode node``, as the DaemonSet runs it) and a
  controller (``--mode controller``, as the provisioner's pod runs it) in two processes over one volumes
  root; csi-sanity reaches the controller through ``--csi.controllerendpoint``.

The editable install runs here; tests/test_package.py and tests/test_image.py run the same suite against
the wheel and the image with :func:`run_suite`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tools import gobuild

from .conftest import require, require_fuse
from .csi_plugin import CsiPlugin

MODES = ("all", "node")
REGRESSIONS = (
    "NodeGetVolumeStats should fail when volume is not found",
    "NodeGetVolumeStats should fail when volume does not exist on the specified path",
)
"""Specs that once failed (a relative volume_path got INVALID_ARGUMENT, not the spec's NOT_FOUND): they must run."""


@dataclass
class Report:
    """What csi-sanity's JUnit report says, spec by spec."""

    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Report:
        report = cls()
        for case in ElementTree.parse(path).getroot().iter("testcase"):
            name = " ".join(case.get("name", "").split())
            problem = case.find("failure")
            if problem is None:
                problem = case.find("error")
            if problem is not None:
                report.failed[name] = (problem.get("message") or "") + (problem.text or "")[-1500:]
            elif case.find("skipped") is not None:
                report.skipped.append(name)
            else:
                report.passed.append(name)
        return report


def csi_sanity() -> Path:
    """The csi-sanity that tools/gobuild.py built, at the table's version; required (CI fails without it)."""
    program = gobuild.load()["csi-sanity"]
    require(program.path.is_file(), f"{program.path} (python -m tools.gobuild csi-sanity)")
    version = subprocess.run([str(program.path), "-version"], capture_output=True, text=True, check=True).stdout
    assert version.strip() == f"Version = {program.version}", version
    return program.path


def run_suite(mode: str, root: Path, plugin: Callable[..., CsiPlugin] = CsiPlugin) -> Report:
    """Start the driver in ``mode`` under ``root``, run all of csi-sanity, stop it.

    ``plugin`` makes a :class:`CsiPlugin` from a root and arguments: another install's, or a container's.
    """
    require_fuse()
    sanity = csi_sanity()
    node_root, controller_root = root / "n", root / "c"  # unix socket paths: at most 107 bytes
    node_root.mkdir()
    with plugin(node_root, "--mode", mode) as node:
        endpoints = ["--csi.endpoint", f"unix://{node.socket}"]
        controller = None
        if mode == "node":
            controller_root.mkdir()
            # The provisioner's pod: no kubelet directory of its own, the same volumes root as the nodes.
            arguments = ("--mode", "controller", "--volumes-root", str(node.volumes))
            controller = plugin(controller_root, *arguments).start()
            endpoints += ["--csi.controllerendpoint", f"unix://{controller.socket}"]
        try:
            junit = root / "csi-sanity.xml"
            result = subprocess.run(
                [
                    str(sanity), *endpoints,
                    "--csi.mountdir", str(node.kubelet / "csi-sanity-mount"),
                    "--csi.stagingdir", str(node.kubelet / "csi-sanity-staging"),
                    "-ginkgo.no-color", f"-ginkgo.junit-report={junit}",
                ],
                capture_output=True, text=True, timeout=600, check=False, cwd=root,
            )  # fmt: skip
        finally:
            if controller is not None:
                controller.cleanup()
        output = result.stdout[-6000:] + result.stderr[-2000:]
        assert junit.is_file(), f"csi-sanity wrote no report (exit {result.returncode}):\n{output}"
        report = Report.read(junit)
        assert not report.failed, "\n\n".join(f"{name}:\n{why}" for name, why in report.failed.items()) + node.log()
        assert result.returncode == 0, output
        assert node.publications() == [], "csi-sanity unpublished every volume it published"
    for spec in REGRESSIONS:
        assert any(spec in name for name in report.passed), f"{spec!r} did not run: {report.skipped}"
    assert len(report.passed) >= 30, report.passed
    return report


@pytest.mark.parametrize("mode", MODES)
def test_csi_sanity_passes_in_full_against_the_editable_install(mode: str, scratch: Path) -> None:
    run_suite(mode, scratch)
