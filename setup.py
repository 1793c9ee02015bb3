"""Build hook: wheels and sdists carry the CSI protobuf module, generated from csi.proto at build time.

Everything else about the package is declared in pyproject.toml.  The
generator is loaded by its path because the package is not importable (nor
its dependencies installed) while it is being built.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _protogen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("protogen", HERE / "interposer" / "csi" / "protogen.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithProtobuf(build_py):
    """build_py that also writes csi_pb2.py (and its .pyi) into the build tree.

    An editable install serves the package from the source tree, so there
    the module is generated in place, as ``./tasks.sh`` does.
    """

    def run(self) -> None:
        super().run()
        _protogen().generate(HERE if self.editable_mode else Path(self.build_lib))


setup(cmdclass={"build_py": BuildPyWithProtobuf})
