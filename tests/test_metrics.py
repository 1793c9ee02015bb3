"""Metrics, proven on real components: a real Prometheus scraping the mount, and OTLP through rotel.

The scripted workload (tests/scripted_io.py) knows what the metrics must say;
every number is compared exactly.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from interposer.local.ports import free_port
from interposer.local.traces import load_spans
from interposer.mount.child import MountProcess
from interposer.mount.table import mount_at
from interposer.names import (
    ATTR_ERROR_TYPE,
    ATTR_FAULT,
    ATTR_HANDLE_KIND,
    ATTR_IO_DIRECTION,
    ATTR_OPERATION,
    DIRECTORIES_NET_CREATED,
    DURATION_BUCKETS,
    FAULTS_INJECTED,
    HANDLES_OPEN,
    INSTRUMENTS,
    IO_BYTES,
    OPERATION_DURATION,
    OPERATIONS_ACTIVE,
    SPAN_NAMES,
    THROTTLE_WAIT,
    InstrumentKind,
    OpName,
)
from interposer.telemetry.prometheus import DEFAULT_PORT

from . import scripted_io
from .conftest import MountFactory, interposer, wait_for
from .layers import marking
from .otlp import Collector, ReceivedPoint, run_collector
from .prometheus import running_prometheus, scrape

OPERATION = OPERATION_DURATION.label(ATTR_OPERATION)
ERROR_TYPE = OPERATION_DURATION.label(ATTR_ERROR_TYPE)


@pytest.fixture
def collector(scratch: Path) -> Iterator[Collector]:
    yield from run_collector(scratch)


def scripted_mount(
    mount_factory: MountFactory, scratch: Path, settings: str, env: dict[str, str] | None = None
) -> MountProcess:
    """A mount configured for the scripted workload, plus the test's own YAML ``settings``."""
    config = scratch / "config.yaml"
    config.write_text(scripted_io.MOUNT_CONFIG + settings)
    return mount_factory(args=["--config", str(config)], env=env)


def test_prometheus_scrape_gives_exact_values(mount_factory: MountFactory, scratch: Path) -> None:
    port = free_port()
    span_file = scratch / "spans.jsonl"
    mount = scripted_mount(
        mount_factory,
        scratch,
        f"metrics:\n  exporters: [prometheus]\n  prometheus_port: {port}\n"
        f"tracing:\n  file: {span_file}\n  export_delay: 0.1\n",
    )
    with running_prometheus(scratch, {"interposer": f"127.0.0.1:{port}"}) as prometheus:
        handles = HANDLES_OPEN.series()
        prometheus.wait_for_scrape_after(time.time(), "interposer")

        def while_open() -> None:
            prometheus.wait_for_scrape_after(time.time(), "interposer")
            kinds = prometheus.by(handles, HANDLES_OPEN.label(ATTR_HANDLE_KIND))
            assert kinds == {"file": 1, "directory": 1}

        started = time.time()
        expected = scripted_io.run(mount.mountpoint, while_open)
        wait_for(lambda: mount.status()["open_files"] == 0, what="the kernel to release every handle")
        prometheus.wait_for_scrape_after(time.time(), "interposer")

        count = OPERATION_DURATION.series("count")
        succeeded = prometheus.by(f'sum by ({OPERATION}) ({count}{{{ERROR_TYPE}=""}})', OPERATION)
        assert {name: succeeded.get(name) for name in expected.operations} == expected.operations
        for (operation, symbol), failures in expected.errors.items():
            query = f'{count}{{{OPERATION}="{operation}",{ERROR_TYPE}="{symbol}"}}'
            assert prometheus.value(query) == failures, query
        direction = IO_BYTES.label(ATTR_IO_DIRECTION)
        assert prometheus.by(IO_BYTES.series(), direction) == {
            "read": expected.bytes_read,
            "write": expected.bytes_written,
        }
        assert prometheus.value(DIRECTORIES_NET_CREATED.series()) == expected.directories_net_created
        assert prometheus.by(handles, HANDLES_OPEN.label(ATTR_HANDLE_KIND)) == {"file": 0, "directory": 0}
        assert set(prometheus.by(OPERATIONS_ACTIVE.series(), OPERATION).values()) == {0}
        faults = prometheus.query(FAULTS_INJECTED.series())
        assert {
            (item["metric"][FAULTS_INJECTED.label(ATTR_FAULT)], item["metric"][OPERATION]): float(item["value"][1])
            for item in faults
        } == expected.faults
        waits = prometheus.value(f"sum({THROTTLE_WAIT.series('count')})")
        assert waits is not None
        assert waits >= 1
        assert prometheus.value(f"sum({THROTTLE_WAIT.series('sum')})") == pytest.approx(waits * marking.WAIT)

        # The buckets are seconds from 10 µs to 10 s, not the SDK's millisecond defaults.
        bounds = {item["metric"]["le"] for item in prometheus.query(f"{OPERATION_DURATION.series('bucket')}")}
        assert {float(bound) for bound in bounds} == {*DURATION_BUCKETS, float("inf")}

        # Every documented metric exists under its documented name and type.
        metadata = prometheus.api("metadata")
        for instrument in INSTRUMENTS:
            family = instrument.prometheus_name.removesuffix("_total")
            assert family in metadata, f"{family} not stored by Prometheus"
            assert metadata[family][0]["type"] == instrument.prometheus_type, family
        stored = set(prometheus.api("label/__name__/values"))
        for instrument in INSTRUMENTS:
            if instrument.kind is InstrumentKind.HISTOGRAM:
                assert {instrument.series(s) for s in ("bucket", "sum", "count")} <= stored
            else:
                assert instrument.series() in stored

        # Exemplars on the duration histogram name real, exported spans of the same operation.
        exemplars = prometheus.api(
            "query_exemplars",
            query=OPERATION_DURATION.series("bucket"),
            start=str(started - 1),
            end=str(time.time() + 1),
        )
    assert exemplars, "no exemplars stored"
    linked = {
        (exemplar["labels"]["trace_id"], exemplar["labels"]["span_id"]): series["seriesLabels"][OPERATION]
        for series in exemplars
        for exemplar in series["exemplars"]
    }

    def exported() -> dict[tuple[str, str], str]:
        return {(s.trace_id, s.span_id): s.name for s in load_spans(span_file)} if span_file.exists() else {}

    wait_for(lambda: linked.keys() <= exported().keys(), what="the exemplars' spans in the span file")
    names = exported()
    assert {key: names[key] for key in linked} == {key: SPAN_NAMES[OpName(op)] for key, op in linked.items()}


def _points(export: list[ReceivedPoint], instrument_name: str) -> list[ReceivedPoint]:
    return [point for point in export if point.metric == instrument_name]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_through_rotel_gives_exact_values_and_agrees_with_spans(
    mount_factory: MountFactory, collector: Collector, scratch: Path, protocol: str
) -> None:
    """One push at unmount (the interval is an hour), so the receiver holds the final numbers; spans agree."""
    span_file = scratch / "spans.jsonl"
    endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
    mount = scripted_mount(
        mount_factory,
        scratch,
        f"metrics:\n  exporters: [otlp]\n  endpoint: {endpoint}\n  protocol: {protocol}\n  export_interval: 3600\n"
        f"tracing:\n  file: {span_file}\n  sample_ratio: 1\n",
    )
    expected = scripted_io.run(mount.mountpoint, lambda: None)
    wait_for(lambda: mount.status()["open_files"] == 0, what="the kernel to release every handle")
    assert mount.stop() == 0
    wait_for(lambda: len(collector.metrics.snapshot()) > 0, timeout=20, what="the metrics pushed at unmount")
    exports = collector.metrics.snapshot()
    assert len(exports) == 1, "one push expected: the one at unmount"
    export = exports[0]
    assert {point.resource["fuse.mountpoint"] for point in export} == {str(mount.mountpoint)}

    durations = _points(export, OPERATION_DURATION.name)
    assert {point.unit for point in durations} == {"s"}
    assert {point.bounds for point in durations} == {DURATION_BUCKETS}
    succeeded = Counter[str]()
    failed = Counter[tuple[str, str]]()
    for point in durations:
        if ATTR_ERROR_TYPE in point.attributes:
            failed[point.attributes[ATTR_OPERATION], point.attributes[ATTR_ERROR_TYPE]] += int(point.value)
        else:
            succeeded[point.attributes[ATTR_OPERATION]] += int(point.value)
    assert {name: succeeded[name] for name in expected.operations} == expected.operations
    assert {key: failed[key] for key in expected.errors} == expected.errors
    io = {p.attributes[ATTR_IO_DIRECTION]: p.value for p in _points(export, IO_BYTES.name)}
    assert io == {"read": expected.bytes_read, "write": expected.bytes_written}
    assert {p.unit for p in _points(export, IO_BYTES.name)} == {"By"}
    assert [p.value for p in _points(export, DIRECTORIES_NET_CREATED.name)] == [expected.directories_net_created]
    assert {p.attributes[ATTR_HANDLE_KIND]: p.value for p in _points(export, HANDLES_OPEN.name)} == {
        "file": 0,
        "directory": 0,
    }
    faults = {
        (p.attributes[ATTR_FAULT], p.attributes[ATTR_OPERATION]): p.value for p in _points(export, FAULTS_INJECTED.name)
    }
    assert faults == expected.faults
    assert any(point.exemplar_trace_ids for point in durations), "no exemplars on the duration histogram"

    # Span and metric counts agree, operation by operation, errors included.
    spans = Counter(span.name for span in load_spans(span_file))
    metric_counts = Counter[str]()
    for point in durations:
        metric_counts[SPAN_NAMES[OpName(point.attributes[ATTR_OPERATION])]] += int(point.value)
    assert {name: spans[name] for name in metric_counts} == dict(metric_counts)
    assert spans.keys() - metric_counts.keys() <= {"fuse.file", "fuse.directory", "fuse.activity"}


def test_both_exporters_from_the_standard_variables(
    mount_factory: MountFactory, collector: Collector, scratch: Path
) -> None:
    port = free_port()
    mount = mount_factory(
        env={
            "OTEL_METRICS_EXPORTER": "otlp,prometheus",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint,
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
        }
    )
    exporters = mount.status()["metrics"]["exporters"]
    assert exporters["prometheus"] == f"http://127.0.0.1:{port}/metrics"
    assert exporters["otlp"] == f"otlp/grpc {collector.grpc_endpoint}"
    (mount.mountpoint / "file").write_bytes(b"x" * 1234)
    scraped = scrape(exporters["prometheus"])
    mountpoint = str(mount.mountpoint)
    assert scraped.value(IO_BYTES.series(), disk_io_direction="write", fuse_mountpoint=mountpoint) == 1234

    def pushed_write_bytes() -> float:
        for export in reversed(collector.metrics.snapshot()):
            for point in _points(export, IO_BYTES.name):
                if point.attributes[ATTR_IO_DIRECTION] == "write":
                    return point.value
        return 0

    wait_for(lambda: pushed_write_bytes() == 1234, what="a push with the bytes written")


def test_default_port_taken_falls_back_but_a_chosen_port_taken_is_an_error(
    mount_factory: MountFactory, scratch: Path
) -> None:
    with socket.socket() as occupier:
        occupier.bind(("127.0.0.1", 0))
        occupier.listen()
        taken = occupier.getsockname()[1]
        (scratch / "b").mkdir()
        (scratch / "m").mkdir()
        refused = interposer(
            "mount", str(scratch / "b"), str(scratch / "m"), env={"OTEL_EXPORTER_PROMETHEUS_PORT": str(taken)}
        )
        assert refused.returncode == 2
        assert f"cannot listen on 127.0.0.1:{taken}: Address already in use" in refused.stderr
        assert "OTEL_EXPORTER_PROMETHEUS_PORT" in refused.stderr
        assert mount_at(scratch / "m") is None
    with socket.socket() as occupier:  # the default port, whoever holds it
        occupier.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            occupier.bind(("127.0.0.1", DEFAULT_PORT))
            occupier.listen()
        except OSError:
            pass  # already taken by someone else: just as good
        second = mount_factory()
        url = second.status()["metrics"]["exporters"]["prometheus"]
        assert url != f"http://127.0.0.1:{DEFAULT_PORT}/metrics"
        assert not (second.mountpoint / "absent").exists()
        assert scrape(url).value(OPERATION_DURATION.series("count"), fuse_operation_name="lookup") >= 1


def test_delta_temporality_pushes_add_up_to_the_exact_totals(
    mount_factory: MountFactory, collector: Collector, scratch: Path
) -> None:
    """With delta temporality (the OTLP exporter's preference variable), successive pushes sum to the totals."""
    mount = scripted_mount(
        mount_factory,
        scratch,
        "tracing:\n  enabled: false\n",
        env={
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": collector.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
            "OTEL_METRIC_EXPORT_INTERVAL": "150",
        },
    )
    expected = scripted_io.run(mount.mountpoint, lambda: wait_for(lambda: len(collector.metrics.snapshot()) >= 2))
    wait_for(lambda: mount.status()["open_files"] == 0, what="the kernel to release every handle")
    assert mount.stop() == 0

    def totals() -> tuple[dict[str, int], dict[str, int]]:
        succeeded = Counter[str]()
        io = Counter[str]()
        for export in collector.metrics.snapshot():
            for point in _points(export, OPERATION_DURATION.name):
                if ATTR_ERROR_TYPE not in point.attributes:
                    succeeded[point.attributes[ATTR_OPERATION]] += int(point.value)
            for point in _points(export, IO_BYTES.name):
                io[point.attributes[ATTR_IO_DIRECTION]] += int(point.value)
        return {name: succeeded[name] for name in expected.operations}, dict(io)

    wanted = (expected.operations, {"read": expected.bytes_read, "write": expected.bytes_written})
    # The mount has exited; its last push reaches the receiver within rotel's batch timeout.
    with contextlib.suppress(AssertionError):  # the assertion below shows the difference
        wait_for(lambda: totals() == wanted, timeout=20)
    assert totals() == wanted
    exports = collector.metrics.snapshot()
    assert len(exports) >= 3
    points = [point for export in exports for point in _points(export, OPERATION_DURATION.name)]
    assert {point.temporality for point in points} == {"delta"}
    # Each push covers the interval since the previous one.
    intervals = sorted({(point.start, point.end) for point in points})
    assert all(later[0] == earlier[1] for earlier, later in itertools.pairwise(intervals))
