"""The package as a user installs it: an sdist and a wheel built from the repository, the wheel in a fresh venv.

The wheel is built from the sdist (``python -m build`` does), so both are
proven complete: everything ``interposer`` needs at run time, the generated
CSI protobuf module included.  The installed ``interposer csi`` serves
Identity and Node and publishes a real FUSE volume, from a directory outside
the checkout so nothing is imported from it.
"""

from __future__ import annotations

import email.parser
import functools
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import interposer
from interposer.csi import csi_pb2
from interposer.mount.table import mount_at
from interposer.names import CSI_DRIVER_NAME
from tools import image

from .conftest import require_fuse
from .csi_plugin import CsiPlugin
from .test_csi import POD, publish, target_in, unpublish
from .test_csi_sanity import MODES, run_suite

ROOT = Path(__file__).resolve().parent.parent
DEBIAN_PYTHON = "/usr/bin/python3"


@dataclass
class Installed:
    """The built distributions and a venv with the wheel installed."""

    sdist: Path
    wheel: Path
    venv: Path

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        """Run a program of the venv from outside the checkout."""
        return subprocess.run(
            [str(self.venv / "bin" / command[0]), *command[1:]],
            capture_output=True, text=True, timeout=120, check=False, cwd=self.venv,
        )  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("package")
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(work / "dist"), str(ROOT)], check=True,
                   capture_output=True)  # fmt: skip
    [sdist] = (work / "dist").glob("*.tar.gz")
    [wheel] = (work / "dist").glob("*.whl")
    venv = work / "venv"
    subprocess.run([DEBIAN_PYTHON, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True, cwd=work)
    return Installed(sdist, wheel, venv)


def test_the_wheel_and_the_sdist_carry_what_runs(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        assert {"interposer/csi/csi_pb2.py", "interposer/csi/csi.proto"} <= names
        [metadata_name] = [name for name in names if name.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(wheel.read(metadata_name).decode())
    assert metadata["Version"] == interposer.__version__
    assert "report" in metadata.get_all("Provides-Extra", [])
    plotting = [line for line in metadata.get_all("Requires-Dist", []) if line.startswith("matplotlib")]
    assert plotting, "matplotlib is a dependency of the report extra"
    assert all('extra == "report"' in line for line in plotting), f"only the report extra needs it: {plotting}"

    with tarfile.open(installed.sdist) as sdist:
        members = {name.partition("/")[2] for name in sdist.getnames()}
    assert {"interposer/csi/csi.proto", "setup.py", "pyproject.toml"} <= members
    assert "interposer/csi/csi_pb2.py" not in members, "generated when the wheel is built, never shipped as source"


def test_the_installed_package_is_the_one_imported(installed: Installed) -> None:
    located = installed.run("python", "-c", "import interposer.csi.csi_pb2 as m; print(m.__file__)")
    assert located.returncode == 0, located.stderr
    assert Path(located.stdout.strip()).is_relative_to(installed.venv)


def test_the_installed_package_says_the_stack_runs_from_a_checkout(installed: Installed, tmp_path: Path) -> None:
    """The local stack runs the programs a checkout builds with the configurations it renders; installed from a
    wheel, ``interposer stack up`` says so and where to go, and starts nothing."""
    started = installed.run("interposer", "stack", "--dir", str(tmp_path / "stack"), "up")
    assert started.returncode != 0
    assert "interposer stack runs from a source checkout of cnfs-interposer" in started.stderr, started.stderr
    assert "./tasks.sh demo" in started.stderr


def test_report_without_its_extra_names_the_extra(installed: Installed) -> None:
    result = installed.run("interposer", "report", "--prometheus", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "interposer: interposer report needs the 'report' extra (matplotlib): pip install 'cnfs-interposer[report]'"
    ]


def test_the_installed_csi_driver_serves_identity_and_node(installed: Installed, scratch: Path) -> None:
    require_fuse()
    with CsiPlugin(scratch, program=[str(installed.venv / "bin" / "interposer")]) as plugin:
        info = plugin.call("Identity", "GetPluginInfo", csi_pb2.GetPluginInfoRequest())
        assert (info.name, info.vendor_version) == (CSI_DRIVER_NAME, interposer.__version__)
        assert plugin.call("Identity", "Probe", csi_pb2.ProbeRequest()).ready.value is True
        assert plugin.call("Node", "NodeGetInfo", csi_pb2.NodeGetInfoRequest()).node_id == "node-a"

        (plugin.host / "data").mkdir()
        target = target_in(plugin, "wheel")
        publish(plugin, "csi-wheel", target, {**POD, "backingDir": "data"})
        entry = mount_at(target)
        assert entry is not None
        assert entry.fstype == "fuse.interposer"
        [publication] = plugin.publications()
        assert publication.pid is not None
        server = Path(f"/proc/{publication.pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        assert Path(server).is_relative_to(installed.venv), "the volume is served by the installed package"
        (target / "through-the-wheel").write_text("ok")
        assert (plugin.host / "data" / "through-the-wheel").read_text() == "ok"
        unpublish(plugin, "csi-wheel", target)
        assert mount_at(target) is None


@pytest.mark.parametrize("mode", MODES)
def test_csi_sanity_passes_in_full_against_the_wheel(installed: Installed, mode: str, scratch: Path) -> None:
    run_suite(mode, scratch, functools.partial(CsiPlugin, program=[str(installed.venv / "bin" / "interposer")]))


def test_the_charts_image_is_the_one_tasks_builds() -> None:
    """One source for the image's tag: the package version, which is the chart's appVersion."""
    chart = yaml.safe_load((ROOT / "charts" / "interposer" / "Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts" / "interposer" / "values.yaml").read_text())
    assert chart["appVersion"] == interposer.__version__
    assert values["image"]["tag"] == "", "an empty tag makes the chart use its appVersion"
    assert image.reference() == f"{values['image']['repository']}:{chart['appVersion']}"
