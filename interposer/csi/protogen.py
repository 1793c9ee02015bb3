"""Generate the CSI protobuf module from csi.proto with grpcio-tools.

Generated code is not committed: ``./tasks.sh`` runs this after installing the
Python environment, and the image's Dockerfile runs it at build time.  The
module is written beside csi.proto as ``interposer.csi.csi_pb2`` (with a .pyi
for the type checker).  Only messages are generated: the services are bound
to their handlers in ``interposer.csi.server``, so no untyped stub code is
needed.
"""

from __future__ import annotations

import importlib.resources
import sys
from pathlib import Path

PROTO = Path(__file__).with_name("csi.proto")
PACKAGE_ROOT = Path(__file__).parents[2]


def generate() -> Path:
    """Run protoc; returns the generated module's path.  Raises RuntimeError with protoc's complaint."""
    from grpc_tools import protoc

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    relative = PROTO.relative_to(PACKAGE_ROOT)
    arguments = [
        "protoc",
        f"-I{PACKAGE_ROOT}",
        f"-I{well_known}",
        f"--python_out={PACKAGE_ROOT}",
        f"--pyi_out={PACKAGE_ROOT}",
        str(relative),
    ]
    if protoc.main(arguments) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    return PROTO.with_name("csi_pb2.py")


if __name__ == "__main__":
    print(f"generated {generate()}", file=sys.stderr)
