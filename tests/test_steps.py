"""The image build's quiet output (tools/steps.py): one line per step, the tools' output in a log file.

In process, with shell commands standing in for debootstrap and buildah: the real build, which
tests/test_image.py runs, takes minutes.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click
import pytest

from tools.steps import TAIL_LINES, StepLog

CHATTY = "for i in $(seq 300); do echo progress $i; done; echo 'debconf: falling back' >&2"
"""About what one debootstrap or apt step prints, on both streams."""


def test_the_terminal_gets_one_line_per_step_and_the_log_the_rest(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log_path = tmp_path / "build" / "image.log"
    log_path.parent.mkdir()
    log_path.write_text("a previous build's output\n")
    with StepLog(log_path) as log:
        log.step("debootstrap")
        log.run(["sh", "-c", CHATTY])
        log.step("buildah bud")
        assert log.run(["sh", "-c", "echo image-id; echo 'STEP 1/9' >&2"], capture=True) == "image-id"
    terminal = capfd.readouterr()
    assert terminal.out == "==> debootstrap\n==> buildah bud\n"
    assert terminal.err == ""
    lines = log_path.read_text().splitlines()
    assert "a previous build's output" not in lines, "each build starts its log afresh"
    assert lines[:3] == ["==> debootstrap", f"$ {shlex.join(['sh', '-c', CHATTY])}", "progress 1"]
    assert lines.index("progress 300") < lines.index("debconf: falling back") < lines.index("==> buildah bud")
    assert lines[-1] == "STEP 1/9", "a captured command's stderr is logged, its stdout returned"


def test_a_failure_names_the_command_the_log_and_how_it_ends(tmp_path: Path) -> None:
    log_path = tmp_path / "image.log"
    with StepLog(log_path) as log, pytest.raises(click.ClickException) as failed:
        log.run(["sh", "-c", f"{CHATTY}; echo 'E: Unable to locate package nope' >&2; exit 100"])
    message = failed.value.message
    head, _, tail = message.partition("\n")
    assert head.endswith(f"exited with 100; its output is in {log_path}, which ends:")
    shown = tail.splitlines()
    assert len(shown) == TAIL_LINES
    assert shown[-1] == "  E: Unable to locate package nope"
    assert "  progress 1" not in shown


def test_a_question_gets_no_answer_rather_than_waiting_for_one(tmp_path: Path) -> None:
    """The log hides a prompt, so a tool that reads stdin must find it empty, not wait forever."""
    with StepLog(tmp_path / "image.log") as log:
        assert log.run(["sh", "-c", "read answer || echo no-answer"], capture=True) == "no-answer"
