"""Running a real server for a test: on loopback, logged to the test's directory, stopped afterwards."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from interposer.local.stack import StackError, program

from .conftest import require


def built_program(name: str) -> str:
    """A program of the stack as tools/gobuild.py builds it, the version the charts deploy (not Debian's
    Prometheus 2.42 or Alertmanager 0.25, whatever PATH holds); missing, it fails in CI and skips elsewhere."""
    try:
        return program(name)
    except StackError as error:
        require(False, str(error))
        raise


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:  # refused, or 503 while the server starts
        return False


@contextmanager
def ready_server(name: str, work: Path, command: Sequence[str], port: int, timeout: float = 60) -> Iterator[str]:
    """Start ``command`` (listening on 127.0.0.1:``port``), wait until its /-/ready answers, yield its URL."""
    log_path = work / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(list(command), stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _ready(f"{url}/-/ready"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{name} did not become ready:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
