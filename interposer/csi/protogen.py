"""Generate the CSI protobuf module from csi.proto with grpcio-tools.

Generated code is not committed.  Building a wheel or an sdist runs this
(setup.py, with grpcio-tools as a build requirement), so an installed package
carries ``interposer.csi.csi_pb2``; ``./tasks.sh`` runs it for a checkout,
where the module is written beside csi.proto (with a .pyi for the type
checker).  Only messages are generated: the services are bound to their
handlers in ``interposer.csi.server``, so no untyped stub code is needed.
This module imports nothing from the package, so setup.py can load it by
path before the package is installed.
"""

from __future__ import annotations

import importlib.resources
import sys
from pathlib import Path

PROTO = Path(__file__).with_name("csi.proto")
SOURCE_ROOT = Path(__file__).parents[2]


def generate(output_root: Path = SOURCE_ROOT) -> Path:
    """Run protoc into ``output_root`` (a tree with the package's layout); returns the module's path.

    Raises RuntimeError with protoc's complaint.
    """
    from grpc_tools import protoc

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    relative = PROTO.relative_to(SOURCE_ROOT)
    arguments = [
        "protoc",
        f"-I{SOURCE_ROOT}",
        f"-I{well_known}",
        f"--python_out={output_root}",
        f"--pyi_out={output_root}",
        str(relative),
    ]
    if protoc.main(arguments) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    return output_root / relative.with_name("csi_pb2.py")


if __name__ == "__main__":
    print(f"generated {generate()}", file=sys.stderr)
