"""A pod's workload: writes, syncs and reads back files in its volumes until told to stop.

Run as ``python csi_workload.py PROGRESS STOP VOLUME...``.  Each round writes one
file per volume with fresh random content, fsyncs it, reads it back and checks
its SHA-256; the number of rounds done goes to PROGRESS (outside the volumes),
and when STOP exists the workload prints a JSON map of every file to its
checksum and exits 0.  Any error is fatal: it exits 1 with the error.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

FILE_BYTES = 256 << 10


def round_trip(path: Path, data: bytes) -> str:
    with path.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    digest = hashlib.sha256(data).hexdigest()
    read = hashlib.sha256(path.read_bytes()).hexdigest()
    if read != digest:
        raise AssertionError(f"{path}: read back {read}, wrote {digest}")
    return digest


def main(progress: Path, stop: Path, volumes: list[Path]) -> None:
    written: dict[str, str] = {}
    rounds = 0
    while not stop.exists():
        for index, volume in enumerate(volumes):
            path = volume / f"round-{rounds:05d}"
            written[f"{index}/{path.name}"] = round_trip(path, os.urandom(FILE_BYTES))
        rounds += 1
        temporary = progress.with_suffix(".tmp")
        temporary.write_text(str(rounds))
        temporary.replace(progress)
    for index, volume in enumerate(volumes):  # everything written is still there, unchanged
        for name, digest in written.items():
            if name.startswith(f"{index}/"):
                path = volume / name.partition("/")[2]
                if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                    raise AssertionError(f"{path} changed after it was written")
    print(json.dumps(written))


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]), Path(sys.argv[2]), [Path(argument) for argument in sys.argv[3:]])
    except (OSError, AssertionError) as exc:
        print(f"workload failed: {exc!r}", file=sys.stderr)
        sys.exit(1)
