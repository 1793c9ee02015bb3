"""A long build's tool output goes to a log file; the terminal gets one line per step.

One image build makes debootstrap, apt, debconf and buildah print about 1,300 lines, which buried the
lines a reader of ``./tasks.sh test`` looks for.  The log keeps all of it, each command headed by its
command line.  When a command fails, the terminal gets the log's path and its last lines, which usually
say what went wrong.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import click

TAIL_LINES = 25
"""Lines of the log shown with a failure: enough for apt's or pip's error and what led to it."""


class StepLog:
    """Runs a build's commands with their output in ``path``, as a context manager that opens the log afresh.

    With ``path`` None the output goes to this process's own stdout and stderr: a one-off command, such as
    the tests' ``buildah from`` and ``rm``, has nothing worth a file.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def __enter__(self) -> StepLog:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")
            self._file = self.path.open("a", buffering=1)  # O_APPEND: the tools' writes and ours never overlap
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def step(self, title: str) -> None:
        """One line on the terminal, and the same line in the log above the output it heads."""
        click.echo(f"==> {title}")
        self._note(f"==> {title}")

    def run(self, command: Sequence[str], *, capture: bool = False) -> str:
        """Run ``command``; with ``capture``, return its stdout (stripped) and log only its stderr.

        Its stdin is empty: a tool that would ask a question fails instead of waiting for an answer
        nobody sees.
        """
        self._note(f"$ {shlex.join(command)}")
        result = subprocess.run(
            command,
            check=False,
            text=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else self._file,
            stderr=self._file,
        )
        if result.returncode != 0:
            raise self.failure(f"{shlex.join(command)} exited with {result.returncode}")
        return result.stdout.strip() if capture else ""

    def failure(self, what: str) -> click.ClickException:
        """An error that says ``what`` failed, where the whole output is, and how it ends."""
        if self._file is None or self.path is None:
            return click.ClickException(what)
        self._file.flush()
        tail = self.path.read_text(errors="replace").splitlines()[-TAIL_LINES:]
        shown = "\n".join(f"  {line}" for line in tail)
        return click.ClickException(f"{what}; its output is in {self.path}, which ends:\n{shown}")

    def _note(self, line: str) -> None:
        if self._file is not None:
            self._file.write(f"{line}\n")
            self._file.flush()


TERMINAL = StepLog(None)
"""Tool output straight to the terminal."""
