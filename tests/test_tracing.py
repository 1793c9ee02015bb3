"""Tracing through a real collector: interposer -> rotel (OTLP gRPC or HTTP) -> a receiver in the test."""

from __future__ import annotations

import errno
import itertools
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from interposer.local.ports import free_port
from interposer.local.traces import load_spans
from interposer.mount.child import MountProcess
from interposer.mount.table import mount_at

from .conftest import MountFactory, interposer, wait_for
from .otlp import Collector, ReceivedSpan, run_collector


@pytest.fixture
def collector(scratch: Path) -> Iterator[Collector]:
    yield from run_collector(scratch)


def write_config(directory: Path, text: str) -> str:
    path = directory / f"config-{time.monotonic_ns()}.yaml"
    path.write_text(text)
    return str(path)


def spans_of(collector: Collector, mount: MountProcess) -> list[ReceivedSpan]:
    return [s for s in collector.traces.snapshot() if s.resource.get("fuse.mountpoint") == str(mount.mountpoint)]


def settled(
    collector: Collector, mount: MountProcess, done: Callable[[list[ReceivedSpan]], bool]
) -> list[ReceivedSpan]:
    """Wait until the received spans satisfy ``done``, then return them."""
    wait_for(lambda: done(spans_of(collector, mount)), timeout=20, what="spans to arrive at the receiver")
    return spans_of(collector, mount)


def scripted_workload(mnt: Path) -> None:
    """Known operations; the mount runs with direct_io so each read/write call is one request."""
    fd = os.open(mnt / "data", os.O_CREAT | os.O_WRONLY, 0o644)
    for _ in range(3):
        os.write(fd, b"x" * 1000)
    os.close(fd)
    fd = os.open(mnt / "data", os.O_RDONLY)
    os.read(fd, 500)
    os.read(fd, 500)
    os.close(fd)
    os.mkdir(mnt / "dir")
    os.rename(mnt / "data", mnt / "dir" / "moved")
    os.link(mnt / "dir" / "moved", mnt / "hard")
    os.unlink(mnt / "hard")
    assert os.listdir(mnt / "dir") == ["moved"]
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "missing")


EXACT = {"create": 1, "write": 3, "open": 1, "read": 2, "flush": 2, "release": 2, "mkdir": 1, "rename": 1}
EXACT |= {"link": 1, "unlink": 1, "opendir": 1, "releasedir": 1}


def by_name(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_scripted_workload_exact_spans_structure_and_errors(
    mount_factory: MountFactory, collector: Collector, scratch: Path, protocol: str
) -> None:
    if protocol == "grpc":  # the standard variables
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        args = ["--direct-io"]
    else:  # the config file
        env = {}
        config = f"tracing:\n  endpoint: {collector.http_endpoint}\n  protocol: http/protobuf\n  export_delay: 0.1\n"
        args = ["--direct-io", "--config", write_config(scratch, config)]
    mount = mount_factory(args=args, env=env)
    scripted_workload(mount.mountpoint)
    mount.stop()
    spans = settled(collector, mount, lambda s: len(by_name(s, "fuse.file")) == 2)

    counts = Counter(s.attributes.get("fuse.operation.name") for s in spans)
    for operation, expected in EXACT.items():
        assert counts[operation] == expected, (operation, counts)
    assert all(s.name == f"fuse.{s.attributes['fuse.operation.name']}" for s in spans if s.name != "fuse.file"
               and s.name not in ("fuse.activity", "fuse.directory"))  # fmt: skip

    # Each handle's life is a parent span; its operations are its children, with a summary.
    writer, reader = sorted(by_name(spans, "fuse.file"), key=lambda s: "fuse.session.ops.write" not in s.attributes)
    children = {s.attributes["fuse.operation.name"] for s in spans if s.parent_id == writer.span_id}
    assert children == {"create", "write", "flush", "release"}
    assert writer.attributes["fuse.session.ops.write"] == 3
    assert writer.attributes["fuse.session.bytes_written"] == 3000
    assert reader.attributes["fuse.session.bytes_read"] == 1000
    assert all(s.trace_id == writer.trace_id for s in spans if s.parent_id == writer.span_id)
    for write in by_name(spans, "fuse.write"):
        assert write.attributes["fuse.transferred"] == 1000
        assert write.attributes["file.path"] == "/data"
        assert write.attributes["process.pid"] == writer.attributes["process.pid"]

    # So is a directory handle's.
    directory = by_name(spans, "fuse.directory")[0]
    listing = {s.attributes["fuse.operation.name"] for s in spans if s.parent_id == directory.span_id}
    assert listing == {"opendir", "readdir", "releasedir"}
    assert directory.attributes["file.path"] == "/dir"

    # Handle-less operations are children of the process's activity span.
    activities = {s.span_id: s for s in by_name(spans, "fuse.activity")}
    mkdir = by_name(spans, "fuse.mkdir")[0]
    assert mkdir.parent_id in activities
    assert activities[mkdir.parent_id].attributes["process.pid"] == mkdir.attributes["process.pid"]

    # Paths of rename, link and unlink.
    rename = by_name(spans, "fuse.rename")[0]
    assert (rename.attributes["file.path"], rename.attributes["fuse.new_path"]) == ("/data", "/dir/moved")
    link = by_name(spans, "fuse.link")[0]
    assert (link.attributes["file.path"], link.attributes["fuse.new_path"]) == ("/dir/moved", "/hard")
    assert by_name(spans, "fuse.unlink")[0].attributes["file.path"] == "/hard"

    # A failed operation carries its errno and error status.
    missing = [s for s in by_name(spans, "fuse.lookup") if s.attributes["file.path"] == "/missing"]
    assert missing
    assert missing[0].error
    assert (missing[0].attributes["error.type"], missing[0].attributes["fuse.errno"]) == ("ENOENT", errno.ENOENT)

    # The resource says who and where.
    resource_attributes = spans[0].resource
    assert resource_attributes["service.name"] == "cnfs-interposer"
    assert resource_attributes["fuse.backing"] == str(mount.backing)
    assert resource_attributes["service.instance.id"]


def test_paths_follow_renames_of_parents_hard_links_and_deletion(
    mount_factory: MountFactory, collector: Collector
) -> None:
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.grpc_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    mount = mount_factory(args=["--direct-io"], env=env)
    mnt = mount.mountpoint
    os.makedirs(mnt / "a" / "b")
    (mnt / "a" / "b" / "f").write_bytes(b"1")
    fd = os.open(mnt / "a" / "b" / "f", os.O_RDWR)
    os.rename(mnt / "a", mnt / "renamed")
    os.pwrite(fd, b"after-parent-rename", 0)
    os.link(mnt / "renamed" / "b" / "f", mnt / "second")
    os.pwrite(fd, b"after-link", 0)
    os.unlink(mnt / "renamed" / "b" / "f")
    os.unlink(mnt / "second")
    os.pwrite(fd, b"after-unlink", 0)
    os.close(fd)
    os.stat(mnt)
    mount.stop()
    spans = settled(collector, mount, lambda s: len(by_name(s, "fuse.write")) >= 4)
    writes = sorted(by_name(spans, "fuse.write"), key=lambda s: len(s.attributes["file.path"]))
    paths = [w.attributes["file.path"] for w in by_name(spans, "fuse.write")]
    assert "/renamed/b/f" in paths
    deleted = [w for w in writes if w.attributes.get("fuse.deleted")]
    assert len(deleted) == 1
    assert deleted[0].attributes["file.path"] == "/second (deleted)"
    link = by_name(spans, "fuse.link")[0]
    assert link.attributes["fuse.other_paths"] == ["/renamed/b/f", "/second"]
    roots = [s for s in by_name(spans, "fuse.getattr") if s.attributes["file.path"] == "/"]
    assert roots
    assert roots[0].attributes["file.inode"] == 1


def test_sampling_keeps_every_real_error_and_samples_negative_lookups_like_successes(
    mount_factory: MountFactory, collector: Collector
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint,
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0",
    }
    mount = mount_factory(env=env)
    for index in range(100):
        (mount.mountpoint / f"f{index}").write_bytes(b"x")
    for index in range(20):
        (mount.mountpoint / f"full-{index}").mkdir()
        (mount.mountpoint / f"full-{index}" / "file").write_bytes(b"")
        with pytest.raises(OSError) as failure:
            os.rmdir(mount.mountpoint / f"full-{index}")
        assert failure.value.errno == errno.ENOTEMPTY
    for index in range(20):
        with pytest.raises(FileNotFoundError):
            os.stat(mount.mountpoint / f"missing-{index}")
    mount.stop()
    not_empty = {f"/full-{index}" for index in range(20)}

    def refused_removals(received: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in received if s.error and s.attributes.get("file.path") in not_empty]

    spans = settled(collector, mount, lambda s: len(refused_removals(s)) == 20)
    errors = refused_removals(spans)
    assert all(s.attributes["error.type"] == "ENOTEMPTY" for s in errors), "every real failure is kept"
    kept_ids = {s.span_id for s in spans}
    for error in errors:
        assert error.parent_id in kept_ids, "the parent of a kept span must be kept"
    # Nothing is sampled at 0: no handle session, and no lookup that only found nothing (how creates start).
    assert not by_name(spans, "fuse.file")
    assert not [s for s in by_name(spans, "fuse.lookup") if s.attributes.get("error.type") == "ENOENT"]


def test_dead_collector_costs_no_latency_and_memory_stays_bounded(
    mount_factory: MountFactory, collector: Collector, scratch: Path
) -> None:
    def files_in(mount: MountProcess) -> list[Path]:
        paths = [mount.mountpoint / f"f{index}" for index in range(400)]
        for path in paths:
            path.write_bytes(b"")
        return paths

    def stat_round(paths: list[Path]) -> float:
        started = time.perf_counter()
        for path in paths:
            os.stat(path)
            os.utime(path)
        return time.perf_counter() - started

    live = mount_factory(env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint})
    dead_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    config = write_config(
        scratch, "tracing:\n  max_queue_size: 1024\n  export_delay: 0.2\nmetrics:\n  export_interval: 0.2\n"
    )
    dead = mount_factory(args=["--config", config], env=dead_env)
    assert set(dead.status()["metrics"]["exporters"]) == {"otlp"}
    live_paths, dead_paths = files_in(live), files_in(dead)
    # Rounds alternate between the mounts, so whatever else the machine does slows both alike; medians.
    rounds = [(stat_round(live_paths), stat_round(dead_paths)) for _ in range(7)]
    live_latency = statistics.median(live for live, _ in rounds)
    dead_latency = statistics.median(dead for _, dead in rounds)
    assert dead_latency < live_latency * 1.5, (dead_latency, live_latency, rounds)

    def rss_kib() -> int:
        """The mount's memory and its span export process's."""
        assert dead.process is not None
        total = 0
        for pid in (dead.process.pid, *export_processes(dead)):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    before = rss_kib()
    for _ in range(50):
        stat_round(dead_paths)
    assert rss_kib() - before < 60_000, "memory grew with a dead collector"
    wait_for(lambda: dead.status()["tracing"]["spans_dropped"] > 0, what="dropped spans to be counted")
    wait_for(lambda: dead.status()["metrics"]["export_failures"] > 0, what="failed metric pushes to be counted")


def export_processes(mount: MountProcess) -> list[int]:
    """The pids of the mount's children: its span export process."""
    assert mount.process is not None
    pid = mount.process.pid
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    return children


def test_a_killed_span_export_process_is_restarted_and_export_goes_on(
    mount_factory: MountFactory, scratch: Path
) -> None:
    span_file = scratch / "spans.jsonl"
    mount = mount_factory(
        args=["--direct-io", "--config", write_config(scratch, f"tracing:\n  file: {span_file}\n  export_delay: 0.1\n")]
    )
    (first,) = export_processes(mount)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: export_processes(mount) not in ([], [first]), timeout=30, what="a new span export process")
    wait_for(lambda: mount.status()["tracing"]["destination"] == str(span_file), what="the new one to start")
    (mount.mountpoint / "after-restart").write_bytes(b"x" * 100)

    def exported() -> bool:
        return "/after-restart" in {span.path for span in load_spans(span_file)}

    wait_for(exported, what="spans of I/O after the restart in the span file")
    mount.stop()


def test_an_exporter_the_span_export_process_cannot_build_stops_the_mount(scratch: Path) -> None:
    (scratch / "b").mkdir()
    (scratch / "m").mkdir()
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "smoke"}
    result = interposer("mount", str(scratch / "b"), str(scratch / "m"), env=env)
    assert result.returncode == 2
    assert "tracing.protocol" in result.stderr
    assert "allowed: grpc, http/protobuf" in result.stderr
    assert mount_at(scratch / "m") is None


def test_a_span_file_that_cannot_be_written_stops_the_mount(scratch: Path) -> None:
    (scratch / "b").mkdir()
    (scratch / "m").mkdir()
    (scratch / "not-a-directory").write_text("")
    config = write_config(scratch, f"tracing:\n  file: {scratch / 'not-a-directory' / 'spans.jsonl'}\n")
    result = interposer("mount", str(scratch / "b"), str(scratch / "m"), "--config", config)
    assert result.returncode == 2
    assert "tracing.file: cannot write spans to" in result.stderr
    assert mount_at(scratch / "m") is None


def test_span_file_is_the_embedded_default_and_can_be_searched_and_replayed(
    mount_factory: MountFactory, collector: Collector, scratch: Path
) -> None:
    span_file = scratch / "spans.jsonl"
    mount = mount_factory(args=["--direct-io", "--config", write_config(scratch, f"tracing:\n  file: {span_file}\n")])
    assert mount.status()["tracing"]["exporter"] == "file"
    scripted_workload(mount.mountpoint)
    mount.stop()

    def traces(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "interposer", "traces", str(span_file), *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout

    summary = traces("--summary")
    assert "slowest operations:" in summary
    assert "ENOENT" in summary
    assert "4000  /data" in summary.replace(",", "")  # 3000 written + 1000 read
    assert traces("--op", "write").count("fuse.write") == 3
    assert "/missing" in traces("--errno", "ENOENT")
    tree = traces("--op", "write", "--tree").splitlines()
    assert tree[0].split()[0] == "trace"  # its id, for --trace
    assert tree[1].split()[2] == "fuse.file"
    assert sum(line.startswith("  ") and "fuse.write" in line for line in tree) == 3
    assert "0 matching spans" in traces("--path", "/nowhere/*")
    assert "0 matching spans" in traces("--since", "2999-01-01T00:00:00")
    assert traces("--until", "2999-01-01T00:00:00", "--op", "write").count("fuse.write") == 3
    refused = subprocess.run(
        [sys.executable, "-m", "interposer", "traces", str(span_file), "--since", "yesterday"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "'yesterday' is not an ISO 8601 time" in refused.stderr

    result = subprocess.run(
        [sys.executable, "-m", "interposer", "traces", str(span_file), "--replay", collector.http_endpoint],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "replayed" in result.stdout
    replayed = settled(collector, mount, lambda s: len(by_name(s, "fuse.write")) == 3)
    assert len(by_name(replayed, "fuse.file")) == 2


def test_resource_carries_k8s_and_otel_resource_attributes(mount_factory: MountFactory, collector: Collector) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint,
        "OTEL_SERVICE_NAME": "my-interposer",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test",
        "K8S_POD_NAME": "app-0",
        "K8S_NAMESPACE_NAME": "shop",
        "K8S_POD_UID": "1234-5678",
    }
    mount = mount_factory(env=env)
    os.stat(mount.mountpoint)
    mount.stop()
    spans = settled(collector, mount, bool)
    attributes = spans[0].resource
    assert attributes["service.name"] == "my-interposer"
    assert attributes["deployment.environment.name"] == "test"
    assert (attributes["k8s.pod.name"], attributes["k8s.namespace.name"], attributes["k8s.pod.uid"]) == (
        "app-0",
        "shop",
        "1234-5678",
    )


def test_activity_spans_end_after_the_idle_gap_and_segments_are_linked(
    mount_factory: MountFactory, collector: Collector, scratch: Path
) -> None:
    config = "tracing:\n  activity_idle_gap: 0.3\n  segment_max_operations: 5\n  export_delay: 0.1\n"
    mount = mount_factory(
        args=["--direct-io", "--config", write_config(scratch, config)],
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint},
    )
    os.mkdir(mount.mountpoint / "first")
    # The sweeper ends the idle activity span while the mount stays up.
    settled(collector, mount, lambda s: any(x.name == "fuse.activity" for x in s))
    os.mkdir(mount.mountpoint / "second")
    fd = os.open(mount.mountpoint / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    for _ in range(12):
        os.write(fd, b"y")
    # A long-lived handle shows up in segments while it is still open.
    settled(collector, mount, lambda s: len(by_name(s, "fuse.file")) >= 2)
    os.close(fd)
    mount.stop()
    spans = settled(collector, mount, lambda s: len(by_name(s, "fuse.file")) >= 3)
    mkdirs = by_name(spans, "fuse.mkdir")
    assert mkdirs[0].parent_id != mkdirs[1].parent_id, "a new activity span after the idle gap"
    segments = sorted(by_name(spans, "fuse.file"), key=lambda s: s.attributes["fuse.segment"])
    assert [s.attributes["fuse.segment"] for s in segments] == list(range(len(segments)))
    for previous, current in itertools.pairwise(segments):
        assert current.links == [previous.span_id]
    assert (
        sum(s.attributes["fuse.session.ops.write"] for s in segments if "fuse.session.ops.write" in s.attributes) == 12
    )


def test_grouping_is_right_with_many_processes_and_handles(mount_factory: MountFactory, collector: Collector) -> None:
    mount = mount_factory(args=["--direct-io"], env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint})
    script = (
        "import os,sys\nbase=sys.argv[1]\nfds=[os.open(os.path.join(base,f'p{os.getpid()}-{i}'),"
        "os.O_CREAT|os.O_WRONLY,0o644) for i in range(4)]\nfor r in range(5):\n for fd in fds: os.write(fd,b'z')\n"
        "for fd in fds: os.close(fd)\n"
    )
    workers = [subprocess.Popen([sys.executable, "-c", script, str(mount.mountpoint)]) for _ in range(6)]
    assert [w.wait(timeout=60) for w in workers] == [0] * 6
    mount.stop()
    spans = settled(collector, mount, lambda s: len(by_name(s, "fuse.file")) == 24)
    sessions = {s.span_id: s for s in by_name(spans, "fuse.file")}
    for write in by_name(spans, "fuse.write"):
        session = sessions[write.parent_id]
        assert session.attributes["file.path"] == write.attributes["file.path"]
        assert session.attributes["process.pid"] == write.attributes["process.pid"]
    assert all(s.attributes["fuse.session.ops.write"] == 5 for s in sessions.values())


def marked_mount(mount_factory: MountFactory, collector: Collector, scratch: Path, ratio: float) -> MountProcess:
    """A mount with the stand-in fault/throttle layer, exporting to the collector."""
    config = f"extra_layers: ['tests.layers.marking:MarkingLayer']\ntracing:\n  sample_ratio: {ratio}\n"
    return mount_factory(
        args=["--config", write_config(scratch, config)], env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint}
    )


def test_faults_and_throttle_waits_reported_by_inner_layers_reach_the_span(
    mount_factory: MountFactory, collector: Collector, scratch: Path
) -> None:
    mount = marked_mount(mount_factory, collector, scratch, ratio=0)
    with pytest.raises(OSError) as excinfo:
        os.stat(mount.mountpoint / "flaky")
    assert excinfo.value.errno == errno.EIO
    (mount.backing / "slow").write_text("")
    os.stat(mount.mountpoint / "slow")
    mount.stop()
    spans = settled(collector, mount, lambda s: any("fuse.fault.type" in x.attributes for x in s))
    faulty = next(s for s in spans if s.attributes.get("file.path") == "/flaky")
    assert faulty.attributes["fuse.fault.type"] == "errno"
    assert faulty.events == ["fuse.fault.injected"]
    assert faulty.attributes["error.type"] == "EIO"
    # At a ratio of 0 only spans with errors or faults (and their parents) are kept.
    assert not [s for s in spans if s.attributes.get("file.path") == "/slow"]
    assert {s.name for s in spans} <= {"fuse.lookup", "fuse.getattr", "fuse.activity"}


def test_throttle_events_are_recorded_when_sampled(
    mount_factory: MountFactory, collector: Collector, scratch: Path
) -> None:
    mount = marked_mount(mount_factory, collector, scratch, ratio=1)
    (mount.backing / "slow").write_text("")
    os.stat(mount.mountpoint / "slow")
    mount.stop()
    spans = settled(collector, mount, lambda s: any(x.attributes.get("file.path") == "/slow" for x in s))
    slow = next(s for s in spans if s.attributes.get("file.path") == "/slow")
    assert slow.events == ["fuse.throttle.wait"]
    assert not slow.error
