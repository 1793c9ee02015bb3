"""Spans outlive their mount: the default span file is kept in the state directory, listed, read, and bounded."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from interposer.local.traces import load_spans
from interposer.mount import kept_spans
from interposer.mount.kept_spans import STATE_DIR_VARIABLE
from interposer.names import SPAN_FILE_SESSION
from interposer.telemetry.spanfile import rotated

from .conftest import MountFactory, interposer


@pytest.fixture
def state(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state directory of this test's own, for the mounts and commands it starts and for this process."""
    path = scratch / "state"
    monkeypatch.setenv(STATE_DIR_VARIABLE, str(path))
    return path


def test_the_state_directory_is_xdg_state_for_users_var_lib_for_root_and_the_variable_above_both(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(STATE_DIR_VARIABLE, raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert kept_spans.state_dir() == tmp_path / "xdg" / "cnfs-interposer"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert kept_spans.state_dir() == tmp_path / "home" / ".local" / "state" / "cnfs-interposer"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert kept_spans.state_dir() == Path("/var/lib/cnfs-interposer")
    monkeypatch.setenv(STATE_DIR_VARIABLE, str(tmp_path / "explicit"))
    assert kept_spans.state_dir() == tmp_path / "explicit"


def _fake_kept(mountpoint: str, started: datetime, size: int) -> Path:
    path = kept_spans.new_path(mountpoint, started)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n" * size)
    return path


def test_pruning_removes_the_oldest_first_but_never_the_one_to_keep(state: Path) -> None:
    now = datetime.now(UTC)
    oldest = _fake_kept("/mnt/a", now - timedelta(hours=3), 400)
    kept = _fake_kept("/mnt/b/deep", now - timedelta(hours=2), 400)
    rotated(kept).write_bytes(b"\n" * 400)  # a rotation counts with its file
    middle = _fake_kept("/mnt/a", now - timedelta(hours=1), 400)
    newest = _fake_kept("/mnt/c", now, 400)
    assert [file.size for file in kept_spans.kept()] == [400, 800, 400, 400]
    assert kept_spans.prune(1200, keep=kept) == [oldest, middle]
    assert [file.path for file in kept_spans.kept()] == [kept, newest]
    assert kept_spans.prune(1200, keep=kept) == [], "already within the limit"
    assert kept_spans.prune(100, keep=kept) == [newest]
    assert not (state / "spans" / "mnt" / "c").exists(), "a directory left empty goes with its last file"
    assert (state / "spans" / "mnt" / "b" / "deep").is_dir()


def test_the_default_span_file_outlives_its_mount_and_unmount_says_where_it_is(
    mount_factory: MountFactory, scratch: Path, state: Path
) -> None:
    mount = mount_factory()
    (mount.mountpoint / "kept").write_text("x")
    destination = Path(mount.status()["tracing"]["destination"])
    assert destination.parent == state / "spans" / str(mount.mountpoint).lstrip("/")
    assert destination.name.endswith(".spans.jsonl")
    assert stat.S_IMODE((state / "spans").stat().st_mode) == 0o700, "spans name paths and commands: private"

    unmounted = interposer("unmount", str(mount.mountpoint))
    assert unmounted.returncode == 0, unmounted.stderr
    assert unmounted.stdout == (
        f"unmounted {mount.mountpoint}; its spans are in {destination}; read them with: interposer traces "
        f"{destination} --summary\n"
    )
    assert mount.stop() == 0
    # The unmount waited for the server to write its last spans: the file is complete when it returns.
    assert "/kept" in {span.path for span in load_spans(destination)}

    listed = interposer("traces")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    assert header.split() == ["MOUNTPOINT", "STARTED", "BYTES", "PATH"]
    mountpoint, started, size, path = row.split()
    assert (mountpoint, path) == (str(mount.mountpoint), str(destination))
    assert int(size.replace(",", "")) == destination.stat().st_size > 0
    assert abs(datetime.fromisoformat(started) - datetime.now(UTC)) < timedelta(minutes=5)

    summary = interposer("traces", "--mount", str(mount.mountpoint), "--summary")
    assert summary.returncode == 0, summary.stderr
    assert summary.stdout == interposer("traces", str(destination), "--summary").stdout
    assert "/kept" in summary.stdout


def test_a_mount_stopped_by_a_signal_logs_where_its_spans_are_and_the_latest_is_read(
    mount_factory: MountFactory, scratch: Path, state: Path
) -> None:
    first = mount_factory()
    (first.mountpoint / "first").write_text("x")
    first_file = Path(first.status()["tracing"]["destination"])
    assert first.stop() == 0
    log = (scratch / "mount0.log").read_text()
    assert (
        f"unmounted {first.mountpoint}; its spans are in {first_file}; read them with: interposer traces "
        f"{first_file} --summary" in log
    )

    again = mount_factory(mountpoint=first.mountpoint)
    (again.mountpoint / "again").write_text("x")
    again_file = Path(again.status()["tracing"]["destination"])
    assert again.stop() == 0
    assert again_file != first_file, "each mount keeps a file of its own"
    assert first_file.exists()
    latest = interposer("traces", "--mount", str(first.mountpoint), "--path", "/*")
    assert latest.returncode == 0, latest.stderr
    assert "/again" in latest.stdout
    assert "/first" not in latest.stdout


def test_past_the_total_size_a_new_mount_removes_the_oldest_files_but_not_a_running_mounts(
    mount_factory: MountFactory, scratch: Path, state: Path
) -> None:
    running = mount_factory()
    running_file = Path(running.status()["tracing"]["destination"])
    later = datetime.now(UTC) + timedelta(hours=1)  # all newer than the running mount's, which is the oldest
    older, newer = (_fake_kept("/elsewhere", later + timedelta(seconds=n), 700_000) for n in (1, 2))
    (scratch / "config.yaml").write_text("tracing: {kept_max_bytes: 1048576}\n")
    bounded = mount_factory(args=["--config", str(scratch / "config.yaml")])
    assert not older.exists(), "the oldest file past the total size was not removed"
    assert newer.exists()
    assert running_file.exists(), "a running mount's file was removed"
    (running.mountpoint / "still-traced").write_text("x")
    assert running.stop() == 0
    assert bounded.stop() == 0
    assert "/still-traced" in {span.path for span in load_spans(running_file)}


def test_a_chosen_span_file_is_used_and_nothing_is_kept(
    mount_factory: MountFactory, scratch: Path, state: Path
) -> None:
    chosen = scratch / "chosen.jsonl"
    (scratch / "config.yaml").write_text(f"tracing: {{file: {chosen}}}\n")
    mount = mount_factory(args=["--config", str(scratch / "config.yaml")])
    (mount.mountpoint / "file").write_text("x")
    unmounted = interposer("unmount", str(mount.mountpoint))
    assert unmounted.stdout == (
        f"unmounted {mount.mountpoint}; its spans are in {chosen}; read them with: interposer traces {chosen} "
        "--summary\n"
    )
    assert any(span.path == "/file" for span in load_spans(chosen))
    assert not state.exists(), "a mount with tracing.file touched the state directory"
    nothing = interposer("traces")
    assert nothing.returncode == 0
    assert nothing.stdout == (
        f"no span files kept in {state / 'spans'}: a mount without tracing.file keeps its spans there\n"
    )
    missing = interposer("traces", "--mount", str(mount.mountpoint), "--summary")
    assert missing.returncode == 2
    assert missing.stderr == (
        f"interposer: no span file kept for {mount.mountpoint} in {state / 'spans'} ('interposer traces' lists the "
        "kept ones; a mount with tracing.file writes there instead)\n"
    )


def test_a_bad_total_size_is_refused_by_its_name(scratch: Path, state: Path) -> None:
    (scratch / "config.yaml").write_text("tracing: {kept_max_bytes: 1000}\n")
    result = interposer("mount", str(scratch), str(scratch), "--config", str(scratch / "config.yaml"))
    assert result.returncode == 2
    assert "tracing.kept_max_bytes: Input should be greater than or equal to 1048576" in result.stderr


def test_one_trace_is_shown_as_a_tree(mount_factory: MountFactory, scratch: Path, state: Path) -> None:
    mount = mount_factory()
    (mount.mountpoint / "one").write_text("x" * 100)
    (mount.mountpoint / "other").write_text("y")
    assert mount.stop() == 0
    (kept,) = kept_spans.kept()
    spans = load_spans(kept.path)
    (session,) = [span for span in spans if span.name == SPAN_FILE_SESSION and span.path == "/one"]
    shown = interposer("traces", "--mount", str(mount.mountpoint), "--trace", session.trace_id.upper())
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"trace {session.trace_id}"
    assert lines[1].split()[2:4] == [SPAN_FILE_SESSION, "/one"]
    children = lines[2:]
    assert children
    assert all(line.startswith("  ") for line in children)
    assert any("fuse.write" in line and "bytes=100" in line for line in children)
    assert "/other" not in shown.stdout

    absent = interposer("traces", str(kept.path), "--trace", "0" * 32)
    assert absent.returncode == 1
    assert absent.stderr == (
        f"interposer: {kept.path} holds no trace {'0' * 32} (sampled out, or in another span file: 'interposer "
        "traces' lists the kept ones)\n"
    )
    malformed = interposer("traces", str(kept.path), "--trace", "xyz")
    assert malformed.returncode == 2
    assert "'xyz' is not a trace id: 32 hex digits" in malformed.stderr
    both = interposer("traces", str(kept.path), "--trace", session.trace_id, "--summary")
    assert both.returncode == 2
    assert both.stderr == "interposer: --summary and --trace cannot be combined: choose one\n"
    no_file = interposer("traces", "--trace", session.trace_id)
    assert no_file.returncode == 2
    assert no_file.stderr == (
        "interposer: --trace needs a span file: give SPAN_FILE or --mount MOUNTPOINT ('interposer traces' alone "
        "lists the kept ones)\n"
    )
