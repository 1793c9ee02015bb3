"""Fault rules and throttling on real mounts: where rules fire, determinism, distributions, isolation, control."""

from __future__ import annotations

import errno
import functools
import hashlib
import math
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from interposer.local.traces import SpanRecord, load_spans
from interposer.mount.child import MountProcess
from interposer.names import (
    ATTR_FAULT,
    ATTR_FAULT_DELAY,
    ATTR_THROTTLE_LIMIT,
    EVENT_FAULT,
    FAULTS_INJECTED,
    THROTTLE_WAIT,
)

from .conftest import MountFactory, interposer, wait_for
from .prometheus import scrape


def mount_with(mount_factory: MountFactory, scratch: Path, config: dict[str, object]) -> MountProcess:
    path = scratch / f"config-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(config))
    return mount_factory(args=["--config", str(path)])


def outcome(call: Callable[[], object]) -> str:
    """'ok' or the errno symbol the call failed with."""
    try:
        call()
    except OSError as exc:
        return errno.errorcode[exc.errno or 0]
    return "ok"


def open_close(path: Path) -> None:
    os.close(os.open(path, os.O_RDONLY))


def read_at_start(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, 100, 0)
    finally:
        os.close(fd)


def test_a_rule_fires_exactly_where_its_match_says(mount_factory: MountFactory, scratch: Path) -> None:
    rule = {
        "name": "db-opens",
        "match": {"operations": ["open"], "paths": ["/data/*.db"], "after_calls": 1, "max_count": 2},
        "action": {"errno": "EACCES"},
    }
    mount = mount_with(mount_factory, scratch, {"faults": {"rules": [rule]}})
    data = mount.mountpoint / "data"
    data.mkdir()
    for name in ("a.db", "b.db", "c.txt"):
        (mount.backing / "data" / name).write_bytes(b"x")
    sequence = ["a.db", "b.db", "c.txt", "a.db", "b.db", "a.db"]
    results = [outcome(functools.partial(open_close, data / name)) for name in sequence]
    # The first matching open passes (after_calls), the next two fail (max_count), the rest pass;
    # c.txt never matches.
    assert results == ["ok", "EACCES", "ok", "EACCES", "ok", "ok"]
    assert mount.status()["faults"] == [{"rule": "db-opens", "matched": 5, "fired": 2}]


def test_every_nth_and_default_errnos(mount_factory: MountFactory, scratch: Path) -> None:
    rules = [
        {"match": {"operations": ["read"], "every_nth": 3}, "action": {"errno": "default"}},
        {"match": {"operations": ["write"]}, "action": {"errno": "default"}},
    ]
    mount = mount_with(mount_factory, scratch, {"faults": {"rules": rules}, "cache": {"direct_io": True}})
    (mount.backing / "file").write_bytes(b"x" * 4096)
    fd = os.open(mount.mountpoint / "file", os.O_RDWR)
    try:
        reads = [outcome(lambda: os.pread(fd, 100, 0)) for _ in range(9)]
        writes = {outcome(lambda: os.pwrite(fd, b"y", 0)) for _ in range(40)}
    finally:
        os.close(fd)
    assert reads == ["ok", "ok", "EIO"] * 3
    assert writes == {"ENOSPC", "EDQUOT"}  # weighted 3:1, both drawn in 40 tries


def probabilistic_outcomes(mount_factory: MountFactory, scratch: Path, seed: int) -> list[str]:
    rule = {"match": {"operations": ["read"], "probability": 0.5}, "action": {"errno": {"EIO": 1, "ENOSPC": 1}}}
    mount = mount_with(
        mount_factory, scratch, {"faults": {"seed": seed, "rules": [rule]}, "cache": {"direct_io": True}}
    )
    (mount.backing / "file").write_bytes(b"x" * 4096)
    fd = os.open(mount.mountpoint / "file", os.O_RDONLY)
    try:
        return [outcome(lambda: os.pread(fd, 100, 0)) for _ in range(300)]
    finally:
        os.close(fd)


def test_the_same_seed_gives_the_same_faults(mount_factory: MountFactory, scratch: Path) -> None:
    first = probabilistic_outcomes(mount_factory, scratch, seed=7)
    again = probabilistic_outcomes(mount_factory, scratch, seed=7)
    other = probabilistic_outcomes(mount_factory, scratch, seed=8)
    assert first == again
    assert first != other
    failures = sum(result != "ok" for result in first)
    assert 120 <= failures <= 180  # p = 0.5 of 300: far outside 5 standard deviations otherwise
    assert {result for result in first if result != "ok"} == {"EIO", "ENOSPC"}


def _exponential_cdf(mean: float) -> Callable[[float], float]:
    return lambda x: 1 - math.exp(-x / mean)


def _uniform_cdf(low: float, high: float) -> Callable[[float], float]:
    return lambda x: min(1.0, max(0.0, (x - low) / (high - low)))


def _normal_cdf(mean: float, stddev: float) -> Callable[[float], float]:
    return lambda x: 0.5 * (1 + math.erf((x - mean) / (stddev * math.sqrt(2))))


def _pareto_cdf(scale: float, shape: float) -> Callable[[float], float]:
    return lambda x: 0.0 if x < scale else 1 - (scale / x) ** shape


@pytest.mark.parametrize(
    ("latency", "cdf"),
    [
        ({"kind": "exponential", "mean": 0.002}, _exponential_cdf(0.002)),
        ({"kind": "uniform", "low": 0.001, "high": 0.004}, _uniform_cdf(0.001, 0.004)),
        ({"kind": "normal", "mean": 0.004, "stddev": 0.001}, _normal_cdf(0.004, 0.001)),
        ({"kind": "pareto", "scale": 0.001, "shape": 3}, _pareto_cdf(0.001, 3)),
    ],
)
def test_latency_follows_its_distribution(
    mount_factory: MountFactory, scratch: Path, latency: dict[str, object], cdf: Callable[[float], float]
) -> None:
    """Kolmogorov-Smirnov on the injected delays, and every request took at least its delay."""
    span_file = scratch / "spans.jsonl"
    config = {
        "faults": {"seed": 3, "rules": [{"match": {"operations": ["read"]}, "action": {"latency": latency}}]},
        "cache": {"direct_io": True},
        "tracing": {"file": str(span_file), "export_delay": 0.1},
    }
    mount = mount_with(mount_factory, scratch, config)
    (mount.backing / "file").write_bytes(b"x" * 4096)
    count = 300
    fd = os.open(mount.mountpoint / "file", os.O_RDONLY)
    try:
        for _ in range(count):
            os.pread(fd, 100, 0)
    finally:
        os.close(fd)

    def delayed() -> list[tuple[float, float]]:
        pairs = []
        for span in load_spans(span_file) if span_file.exists() else []:
            for name, attributes in zip(span.events, span.event_attributes, strict=True):
                if name == EVENT_FAULT and ATTR_FAULT_DELAY in attributes:
                    pairs.append((attributes[ATTR_FAULT_DELAY], (span.end_ns - span.start_ns) / 1e9))
        return pairs

    wait_for(lambda: len(delayed()) == count, what="every delayed read's span")
    pairs = delayed()
    assert all(took >= delay for delay, took in pairs)
    delays = sorted(delay for delay, _ in pairs)
    statistic = max(
        max(abs((index + 1) / count - cdf(value)), abs(index / count - cdf(value)))
        for index, value in enumerate(delays)
    )
    assert statistic < 1.36 / math.sqrt(count), f"KS statistic {statistic:.3f}"


def test_a_delayed_request_never_blocks_another(mount_factory: MountFactory, scratch: Path) -> None:
    rule = {
        "match": {"paths": ["/slow/*"], "operations": ["read"]},
        "action": {"latency": {"kind": "fixed", "seconds": 2.0}},
    }
    mount = mount_with(mount_factory, scratch, {"faults": {"rules": [rule]}})
    (mount.backing / "slow").mkdir()
    (mount.backing / "slow" / "file").write_bytes(b"x")
    (mount.backing / "fast").write_bytes(b"y" * 4096)
    slow_took: list[float] = []

    def slow() -> None:
        started = time.monotonic()
        (mount.mountpoint / "slow" / "file").read_bytes()
        slow_took.append(time.monotonic() - started)

    thread = threading.Thread(target=slow)
    thread.start()
    wait_for(lambda: mount.status()["faults"][0]["fired"] >= 1, what="the slow request to be delayed")
    started = time.monotonic()
    for index in range(50):
        (mount.mountpoint / "fast").read_bytes()
        (mount.mountpoint / f"new-{index}").write_bytes(b"z")
    fast_took = time.monotonic() - started
    assert thread.is_alive(), "the slow request finished before the fast ones were done"
    thread.join()
    assert fast_took < 1.0
    assert slow_took[0] >= 2.0


def test_corruption_is_caught_by_checksums(mount_factory: MountFactory, scratch: Path) -> None:
    rules = [
        {"match": {"paths": ["/on-read"], "operations": ["read"]}, "action": {"corrupt": {"on": "read"}}},
        {
            "match": {"paths": ["/on-write"], "operations": ["write"]},
            "action": {"corrupt": {"on": "write", "mode": "random", "max_bytes": 16}},
        },
    ]
    mount = mount_with(mount_factory, scratch, {"faults": {"rules": rules}, "cache": {"direct_io": True}})
    payload = os.urandom(256 * 1024)
    digest = hashlib.sha256(payload).hexdigest()
    (mount.backing / "on-read").write_bytes(payload)
    assert hashlib.sha256((mount.mountpoint / "on-read").read_bytes()).hexdigest() != digest
    assert hashlib.sha256((mount.backing / "on-read").read_bytes()).hexdigest() == digest  # the disk is intact
    (mount.mountpoint / "on-write").write_bytes(payload)
    on_disk = (mount.backing / "on-write").read_bytes()
    assert len(on_disk) == len(payload)
    assert hashlib.sha256(on_disk).hexdigest() != digest
    assert sum(a != b for a, b in zip(on_disk, payload, strict=True)) <= 16 * (len(payload) // 4096 + 1)


def test_short_reads_and_writes_and_attribute_overrides(mount_factory: MountFactory, scratch: Path) -> None:
    rules = [
        {"match": {"paths": ["/short"], "operations": ["read", "write"]}, "action": {"short": 0.25}},
        {"match": {"paths": ["/liar"]}, "action": {"attributes": {"size": 12345, "mode": 0o600, "mtime": 1e9}}},
    ]
    mount = mount_with(mount_factory, scratch, {"faults": {"rules": rules}, "cache": {"direct_io": True}})
    (mount.backing / "short").write_bytes(b"s" * 8192)
    fd = os.open(mount.mountpoint / "short", os.O_RDWR)
    try:
        assert len(os.pread(fd, 8000, 0)) == 2000
        assert os.pwrite(fd, b"w" * 4000, 0) == 1000
    finally:
        os.close(fd)
    (mount.backing / "liar").write_bytes(b"tiny")
    seen = os.stat(mount.mountpoint / "liar")
    assert (seen.st_size, seen.st_mode & 0o7777, seen.st_mtime) == (12345, 0o600, 1e9)


def test_control_changes_behaviour_mid_run(mount_factory: MountFactory, scratch: Path) -> None:
    mount = mount_factory(args=["--direct-io"])
    (mount.backing / "file").write_bytes(b"x" * 100)
    path = mount.mountpoint / "file"
    assert outcome(path.read_bytes) == "ok"
    rules = scratch / "rules.yaml"
    rules.write_text(
        yaml.safe_dump({"faults": {"rules": [{"match": {"operations": ["read"]}, "action": {"errno": "EIO"}}]}})
    )
    mountpoint = str(mount.mountpoint)
    assert stat.S_IMODE(mount.control_socket.stat().st_mode) == 0o600  # only its owner reconfigures the mount
    assert stat.S_IMODE(mount.control_socket.parent.stat().st_mode) == 0o700
    assert interposer("ctl", mountpoint, "set", str(rules)).returncode == 0
    assert outcome(path.read_bytes) == "EIO"
    assert interposer("ctl", mountpoint, "disable", "faults").returncode == 0
    assert outcome(path.read_bytes) == "ok"
    assert mount.status()["layers"]["faults"] == "off"
    assert interposer("ctl", mountpoint, "enable", "faults").returncode == 0
    assert outcome(path.read_bytes) == "EIO"

    bad = scratch / "bad.yaml"
    bad.write_text("faults:\n  rules:\n    - action: {errno: EWHAT}\nthrottle:\n  read_iops: {rate: 0}\n")
    refused = interposer("ctl", mountpoint, "set", str(bad))
    assert refused.returncode == 2
    assert "faults.rules.0.action.errno" in refused.stderr
    assert "throttle.read_iops.rate" in refused.stderr
    assert outcome(path.read_bytes) == "EIO"  # nothing of the bad change applied
    cache = scratch / "cache.yaml"
    cache.write_text("cache:\n  direct_io: false\n")
    refused = interposer("ctl", mountpoint, "set", str(cache))
    assert "cache: cannot change while mounted; allowed: faults, throttle, crash" in refused.stderr

    throttle = scratch / "throttle.yaml"
    throttle.write_text("faults: {rules: []}\nthrottle:\n  mode: fail\n  read_iops: {rate: 1, burst: 1}\n")
    assert interposer("ctl", mountpoint, "set", str(throttle)).returncode == 0
    read_once = functools.partial(read_at_start, path)  # Python's read_bytes() hides EAGAIN
    assert [outcome(read_once) for _ in range(2)] == ["ok", "EAGAIN"]
    status = mount.status()
    assert status["layers"] == {
        "tracing": "on",
        "metrics": "on",
        "throttle": "on",
        "faults": "absent",
        "extra": "absent",
        "crash": "absent",
    }
    assert status["throttle"]["rejected"] == 1


@pytest.mark.parametrize("direction", ["read", "write"])
def test_throttle_never_exceeds_the_rate_nor_waits_longer_than_it_requires(
    mount_factory: MountFactory, scratch: Path, direction: str
) -> None:
    """Both bounds follow from the token bucket's configuration alone, so a loaded machine cannot break them.

    A bucket of ``burst`` tokens refilled at ``rate`` lets at most ``burst + rate * t`` bytes through in ``t``
    seconds, however slow the caller; and it makes a caller wait only for tokens it lacks, so never longer in
    all than ``total / rate`` (a slow caller waits less, as the bucket refills while it works).
    """
    rate, burst, chunk = 4 << 20, 128 << 10, 128 << 10
    config = {"throttle": {f"{direction}_bytes": {"rate": rate, "burst": burst}}, "cache": {"direct_io": True}}
    mount = mount_with(mount_factory, scratch, config)
    total = 4 * rate  # about four seconds at the limit
    (mount.backing / "file").write_bytes(bytes(total))
    fd = os.open(mount.mountpoint / "file", os.O_RDWR)
    try:
        started = time.monotonic()
        for offset in range(0, total, chunk):
            if direction == "read":
                assert len(os.pread(fd, chunk, offset)) == chunk
            else:
                assert os.pwrite(fd, bytes(chunk), offset) == chunk
        took = time.monotonic() - started
    finally:
        os.close(fd)
    assert total <= burst + rate * took, f"{(total - burst) / took / rate:.3f} of the limit"
    waited = mount.status()["throttle"]["limits"][f"{direction}_bytes"]
    assert waited["waits"] >= 1
    assert 0 < waited["waited_seconds"] <= total / rate


def queued(mount: MountProcess, count: int) -> bool:
    """Whether at least ``count`` reads have waited for the read IOPS limit."""
    waits: int = mount.status()["throttle"]["limits"]["read_iops"]["waits"]
    return waits >= count


def test_throttled_waiters_are_served_in_order_and_do_not_stall_others(
    mount_factory: MountFactory, scratch: Path
) -> None:
    """Judged by the mount's own span times, not by when the caller's threads get the CPU back.

    Six reads queue for a limit of 2 reads/s (burst 1), so the last is served (6 - 1) / 2 = 2.5 s after the
    first; requests the limit does not cover (creates) must all be served before that queue drains.
    """
    rate, burst, reads = 2, 1, 6
    span_file = scratch / "spans.jsonl"
    config = {
        "throttle": {"read_iops": {"rate": rate, "burst": burst}},
        "cache": {"direct_io": True},
        "tracing": {"file": str(span_file), "export_delay": 0.1},
    }
    mount = mount_with(mount_factory, scratch, config)
    for index in range(reads):
        (mount.backing / f"f{index}").write_bytes(b"x")
    descriptors = [os.open(mount.mountpoint / f"f{index}", os.O_RDONLY) for index in range(reads)]
    try:
        threads = []
        for index, fd in enumerate(descriptors):
            thread = threading.Thread(target=os.pread, args=(fd, 1, 0))
            thread.start()
            threads.append(thread)
            wait_for(functools.partial(queued, mount, index), what=f"read {index} to queue")
        for index in range(20):
            (mount.mountpoint / f"meta-{index}").write_bytes(b"")  # no read: not throttled
        for thread in threads:
            thread.join()
    finally:
        for fd in descriptors:
            os.close(fd)

    def served() -> tuple[list[SpanRecord], list[SpanRecord]]:
        spans = load_spans(span_file) if span_file.exists() else []
        return [s for s in spans if s.name == "fuse.read"], [s for s in spans if s.name == "fuse.create"]

    wait_for(lambda: [len(kind) for kind in served()] == [reads, 20], what="the spans of every read and create")
    read_spans, creates = served()
    in_service_order = [span.path for span in sorted(read_spans, key=lambda span: span.end_ns)]
    assert in_service_order == [f"/f{index}" for index in range(reads)]
    drained = max(span.end_ns for span in read_spans)
    assert max(span.end_ns for span in creates) < drained, "creates waited behind the throttled reads"
    arrived = min(span.start_ns for span in read_spans)  # spans start outside the throttle, on arrival
    assert (drained - arrived) / 1e9 >= (reads - burst) / rate  # the limit held them apart


def test_crash_drops_exactly_the_unsynced_writes(mount_factory: MountFactory, scratch: Path) -> None:
    mount = mount_with(mount_factory, scratch, {"crash": {"enabled": True}})
    root = mount.mountpoint

    def write(path: Path, data: bytes, *, offset: int = 0, sync: bool = False) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data, offset)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    write(root / "synced", b"A" * 5000, sync=True)
    write(root / "synced", b"B" * 3000, offset=4000)  # overwrites the tail and extends: not synced
    write(root / "never", b"C" * 7000)
    write(root / "half", b"D" * 100, sync=True)
    write(root / "half", b"E" * 100, offset=100, sync=True)
    write(root / "half", b"F" * 50, offset=50)
    write(root / "cut", b"G" * 9000, sync=True)
    os.truncate(root / "cut", 10)  # a truncation is a change too
    pending = mount.status()["unsynced"]
    assert pending["files"] == 4
    result = interposer("ctl", str(mount.mountpoint), "crash")
    assert result.returncode == 0, result.stderr
    expected = {"synced": b"A" * 5000, "never": b"", "half": b"D" * 100 + b"E" * 100, "cut": b"G" * 9000}
    for name, content in expected.items():
        assert (mount.backing / name).read_bytes() == content, name
        assert (root / name).read_bytes() == content, f"{name} through the mount (the kernel cache was dropped)"
    assert mount.status()["unsynced"] == {"files": 0, "changes": 0, "bytes": 0}


def test_crash_without_the_journal_says_how_to_enable_it(mounted: MountProcess) -> None:
    result = interposer("ctl", str(mounted.mountpoint), "crash")
    assert result.returncode == 2
    assert "crash needs crash.enabled: true" in result.stderr


EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def _flaky(mount: MountProcess) -> None:
    (mount.backing / "data").write_bytes(b"x" * 4096)
    fd = os.open(mount.mountpoint / "data", os.O_RDONLY | os.O_DIRECT)  # past the page cache
    try:
        results = [outcome(functools.partial(os.pread, fd, 100, 0)) for _ in range(1000)]
    finally:
        os.close(fd)
    assert 0 < results.count("EIO") < 40
    assert set(results) == {"ok", "EIO"}


def _slow(mount: MountProcess) -> None:
    (mount.backing / "data").write_bytes(b"x" * 4096)
    fd = os.open(mount.mountpoint / "data", os.O_RDONLY | os.O_DIRECT)
    try:
        started = time.monotonic()
        for _ in range(20):
            os.pread(fd, 100, 0)
        assert time.monotonic() - started > 20 * 0.002
    finally:
        os.close(fd)


def _full(mount: MountProcess) -> None:
    (mount.backing / "existing").write_bytes(b"old")
    assert outcome(functools.partial((mount.mountpoint / "new").write_bytes, b"x")) == "ENOSPC"
    assert outcome(functools.partial(os.mkdir, mount.mountpoint / "dir")) == "ENOSPC"
    assert (mount.mountpoint / "existing").read_bytes() == b"old"
    os.rename(mount.mountpoint / "existing", mount.mountpoint / "moved")
    os.unlink(mount.mountpoint / "moved")


def _capped(mount: MountProcess) -> None:
    limits = mount.status()["config"]["throttle"]
    assert limits["read_bytes"]["rate"] == 50 << 20
    assert mount.status()["layers"]["throttle"] == "on"


def _power_loss(mount: MountProcess) -> None:
    (mount.mountpoint / "journal").write_bytes(b"unsynced")
    assert interposer("ctl", str(mount.mountpoint), "crash").returncode == 0
    assert (mount.backing / "journal").read_bytes() == b""


@pytest.mark.parametrize(
    ("example", "check"),
    [
        ("flaky-disk", _flaky),
        ("slow-disk", _slow),
        ("full-disk", _full),
        ("bandwidth-cap", _capped),
        ("power-loss", _power_loss),
    ],
)
def test_example_configurations_do_what_they_say(
    mount_factory: MountFactory, example: str, check: Callable[[MountProcess], None]
) -> None:
    mount = mount_factory(args=["--config", str(EXAMPLES / f"{example}.yaml")])
    check(mount)


def test_every_action_shows_in_metrics_and_spans(mount_factory: MountFactory, scratch: Path) -> None:
    span_file = scratch / "spans.jsonl"
    config = {
        "faults": {
            "rules": [
                {"match": {"paths": ["/broken"], "operations": ["lookup"]}, "action": {"errno": "EIO"}},
                {
                    "match": {"paths": ["/late"], "operations": ["getattr"]},
                    "action": {"latency": {"kind": "fixed", "seconds": 0.01}},
                },
            ]
        },
        "throttle": {"read_iops": {"rate": 20, "burst": 1}},
        "cache": {"direct_io": True, "attr_timeout": 0},
        "tracing": {"file": str(span_file), "export_delay": 0.1},
    }
    mount = mount_with(mount_factory, scratch, config)
    for _ in range(3):
        assert outcome(functools.partial(os.stat, mount.mountpoint / "broken")) == "EIO"
    (mount.backing / "late").write_bytes(b"x" * 100)
    os.stat(mount.mountpoint / "late")
    fd = os.open(mount.mountpoint / "late", os.O_RDONLY)
    try:
        for _ in range(5):
            os.pread(fd, 10, 0)
    finally:
        os.close(fd)
    scraped = scrape(mount.status()["metrics"]["exporters"]["prometheus"])
    faults = FAULTS_INJECTED.series()
    assert scraped.value(faults, fuse_fault_type="errno", fuse_operation_name="lookup") == 3
    assert scraped.value(faults, fuse_fault_type="latency", fuse_operation_name="getattr") >= 1
    assert scraped.value(THROTTLE_WAIT.series("count"), fuse_throttle_limit="read_iops") >= 3

    def events() -> set[tuple[str, str]]:
        found = set()
        for span in load_spans(span_file) if span_file.exists() else []:
            for attributes in span.event_attributes:
                found.add((span.name, str(attributes.get(ATTR_FAULT, attributes.get(ATTR_THROTTLE_LIMIT)))))
        return found

    wanted = {("fuse.lookup", "errno"), ("fuse.getattr", "latency"), ("fuse.read", "read_iops")}
    wait_for(lambda: wanted <= events(), what=f"span events {wanted}")
