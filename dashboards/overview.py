"""I/O overview: how much, how fast, how often it fails, and what is open."""

from __future__ import annotations

from grafanalib import core

from interposer.names import (
    ATTR_ERROR_TYPE,
    ATTR_HANDLE_KIND,
    ATTR_IO_DIRECTION,
    DIRECTORIES_NET_CREATED,
    HANDLES_OPEN,
    IO_BYTES,
    OPERATION_DURATION,
    OPERATIONS_ACTIVE,
    OpName,
    expected_failures_text,
)

from .common import OPERATION, RATE_WINDOW, dashboard, selector, targets, unexpected_failures
from .panels import grid, mirrored, stat, timeseries

COUNT = OPERATION_DURATION.series("count")
BUCKET = OPERATION_DURATION.series("bucket")
ERROR_TYPE = OPERATION_DURATION.label(ATTR_ERROR_TYPE)
DIRECTION = IO_BYTES.label(ATTR_IO_DIRECTION)
KIND = HANDLES_OPEN.label(ATTR_HANDLE_KIND)
DATA_OPERATIONS = f'{OPERATION}=~"{OpName.READ.value}|{OpName.WRITE.value}"'


def build() -> core.Dashboard:
    every = selector()
    failed = f"sum({unexpected_failures(COUNT)})"
    requests = f"sum(rate({COUNT}{every}[{RATE_WINDOW}]))"
    return dashboard(
        "cnfs-io-overview",
        "cnfs-interposer / I/O overview",
        "Requests, throughput, errors and open objects of interposed mounts.",
        [
            stat("Operations/s", "FUSE requests per second.", targets((requests, "")), "ops", grid(0, 0, 6, 4)),
            stat(
                "Error ratio",
                f"Share of requests that failed, expected answers ({expected_failures_text()}) left out.",
                targets((f"({failed} or vector(0)) / {requests}", "")),
                "percentunit",
                grid(6, 0, 6, 4),
            ),
            stat(
                "p99 latency",
                "99th percentile of request duration, all operations.",
                targets((f"histogram_quantile(0.99, sum by (le) (rate({BUCKET}{every}[{RATE_WINDOW}])))", "")),
                "s",
                grid(12, 0, 6, 4),
            ),
            stat(
                "Throughput",
                "Bytes read and written per second.",
                targets((f"sum(rate({IO_BYTES.series()}{selector(operation=False)}[{RATE_WINDOW}]))", "")),
                "Bps",
                grid(18, 0, 6, 4),
            ),
            timeseries(
                "Operations/s by operation",
                "Requests per second, by FUSE operation.",
                targets((f"sum by ({OPERATION}) (rate({COUNT}{every}[{RATE_WINDOW}]))", f"{{{{{OPERATION}}}}}")),
                "ops",
                grid(0, 4, 12, 8),
                stacked=True,
            ),
            timeseries(
                "Throughput",
                "Bytes actually moved per second: writes above zero, reads below.",
                targets(
                    (
                        f"sum by ({DIRECTION}) (rate({IO_BYTES.series()}{selector(operation=False)}[{RATE_WINDOW}]))",
                        f"{{{{{DIRECTION}}}}}",
                    )
                ),
                "Bps",
                grid(12, 4, 12, 8),
                overrides=[mirrored("read")],
            ),
            timeseries(
                "IOPS",
                "Read and write requests per second.",
                targets(
                    (
                        f"sum by ({OPERATION}) (rate({COUNT}{selector(DATA_OPERATIONS)}[{RATE_WINDOW}]))",
                        f"{{{{{OPERATION}}}}}",
                    )
                ),
                "iops",
                grid(0, 12, 12, 8),
            ),
            timeseries(
                "Errors/s by errno",
                "Failed requests per second, by the errno the caller saw; expected answers "
                f"({expected_failures_text()}) left out.",
                targets((f"sum by ({ERROR_TYPE}) ({unexpected_failures(COUNT)})", f"{{{{{ERROR_TYPE}}}}}")),
                "ops",
                grid(12, 12, 12, 8),
                stacked=True,
            ),
            timeseries(
                "Open handles",
                "File and directory handles open now.",
                targets((f"sum by ({KIND}) ({HANDLES_OPEN.series()}{selector(operation=False)})", f"{{{{{KIND}}}}}")),
                "short",
                grid(0, 20, 8, 8),
            ),
            timeseries(
                "Directories created (net)",
                "Directories created minus removed since each mount started.",
                targets((f"sum({DIRECTORIES_NET_CREATED.series()}{selector(operation=False)})", "net directories")),
                "short",
                grid(8, 20, 8, 8),
            ),
            timeseries(
                "Operations in flight",
                "Requests being served right now, by operation.",
                targets((f"sum by ({OPERATION}) ({OPERATIONS_ACTIVE.series()}{every})", f"{{{{{OPERATION}}}}}")),
                "short",
                grid(16, 20, 8, 8),
            ),
        ],
    )
