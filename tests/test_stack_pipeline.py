"""The deployed pipeline on one machine (``interposer stack up``): a real mount sends its telemetry over OTLP to the
collector built here, which passes the spans on to the Jaeger built here and the span metrics to the Prometheus
built here, each running the configuration helmfile.d renders for it."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from interposer.local.ports import free_port
from interposer.local.stack import ENVIRONMENTS, SERVICES, LocalStack, StackError, program
from interposer.mount.child import MountProcess

from .conftest import MountFactory, require
from .prometheus import Prometheus

DEADLINE = 120.0
"""Seconds for a span to reach Jaeger and its span metrics Prometheus: the collector batches for 1 s, the
span_metrics connector flushes every 15 s and the stack scrapes every 5 s."""


def require_programs() -> None:
    """Each program of the stack, as tools/gobuild.py builds it; missing ones fail in CI."""
    for name in SERVICES:
        try:
            program(name)
        except StackError as error:
            require(False, str(error))


def poll(what: str, probe: Any) -> Any:
    """Call ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + DEADLINE
    while not (found := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {DEADLINE:.0f} s")
        time.sleep(0.5)
    return found


@contextmanager
def pipeline(
    mount_factory: MountFactory, scratch: Path, name: str, environment: str = "default"
) -> Iterator[tuple[LocalStack, MountProcess, str]]:
    """A stack of the test's own, running what ``environment`` renders, and a mount sending it its telemetry as
    service ``name``, which has written a file; the mount is stopped and the stack brought down afterwards."""
    require_programs()
    ports = (free_port(), free_port(), free_port(), free_port())
    stack = LocalStack(scratch / "stack", *ports, environment=environment)
    service = f"{name}-{scratch.name[-8:]}"
    try:
        stack.up()
        mount = mount_factory(env={"OTEL_EXPORTER_OTLP_ENDPOINT": stack.otlp_endpoint, "OTEL_SERVICE_NAME": service})
        (mount.mountpoint / "data").write_bytes(b"x" * 65536)
        yield stack, mount, service
        mount.stop()
    finally:
        assert set(stack.down()) <= set(SERVICES)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_a_mounts_trace_is_found_in_jaeger_and_its_span_metrics_in_prometheus(
    mount_factory: MountFactory, scratch: Path, environment: str
) -> None:
    """In each environment: they differ in what Jaeger stores traces in (memory, or badger on disk)."""
    with pipeline(mount_factory, scratch, "pipeline", environment) as (stack, mount, service):
        assert (mount.mountpoint / "data").read_bytes() == b"x" * 65536
        (mount.mountpoint / "dir").mkdir()

        traces = poll(f"trace of {service} in Jaeger", lambda: stack.jaeger_traces(service))
        spans = [span for trace in traces for span in trace["spans"]]
        ids = {span["spanID"] for span in spans}
        children = [
            span
            for span in spans
            if any(ref["refType"] == "CHILD_OF" and ref["spanID"] in ids for ref in span.get("references", []))
        ]
        assert children, "no span has its parent in the trace"

        prometheus = Prometheus(stack.prometheus_url)
        calls = f'traces_span_metrics_calls_total{{service_name="{service}"}}'
        poll(
            f"calls of {service} counted in Prometheus' span metrics",
            lambda: sum(float(item["value"][1]) for item in prometheus.query(calls)) > 0,
        )


def _values(series: list[dict[str, Any]]) -> list[float]:
    """Every point's value of a Monitor query's series (NaN is a value: Jaeger writes it as the string "NaN")."""
    return [float(point["gaugeValue"]["doubleValue"]) for item in series for point in item["metricPoints"]]


def test_jaegers_monitor_tab_shows_a_mounts_operations_with_their_latencies(
    mount_factory: MountFactory, scratch: Path
) -> None:
    """What the Monitor tab asks by default (server spans) finds the operations, with numbers for latencies, and
    no error rate where nothing failed: a parent span is no error for its children's benign ENOENT."""
    with pipeline(mount_factory, scratch, "monitor") as (stack, mount, service):
        assert not (mount.mountpoint / "missing").exists()

        poll(
            f"calls of {service}'s server spans in Jaeger's Monitor tab",
            lambda: [value for value in _values(stack.jaeger_monitor("calls", service)) if value > 0],
        )

        def latencies_while_requests_flow() -> list[float]:
            """A latency is a quantile of the requests in the rate window: some must keep coming."""
            (mount.mountpoint / "data").read_bytes()
            values = _values(stack.jaeger_monitor("latencies", service, quantile="0.95"))
            return [value for value in values if not math.isnan(value)]

        latencies = poll(
            f"latencies of {service}'s server spans in Jaeger's Monitor tab", latencies_while_requests_flow
        )
        assert all(value >= 0 for value in latencies)
        errors = stack.jaeger_monitor("errors", service, spanKind="internal")
        assert not [value for value in _values(errors) if value > 0], "an error rate where no request failed"
