"""The one place where names shared by code, dashboards, alerts and docs are defined.

Operation names are the FUSE request names that pyfuse3 exposes; they become
span names (``fuse.<name>``) and the ``fuse.operation.name`` attribute, so they
must never be spelled anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum


class OpName(StrEnum):
    """Every FUSE operation that the interposer handles."""

    LOOKUP = "lookup"
    FORGET = "forget"
    GETATTR = "getattr"
    SETATTR = "setattr"
    READLINK = "readlink"
    SYMLINK = "symlink"
    MKNOD = "mknod"
    MKDIR = "mkdir"
    UNLINK = "unlink"
    RMDIR = "rmdir"
    RENAME = "rename"
    LINK = "link"
    OPEN = "open"
    CREATE = "create"
    READ = "read"
    WRITE = "write"
    FLUSH = "flush"
    RELEASE = "release"
    FSYNC = "fsync"
    OPENDIR = "opendir"
    READDIR = "readdir"
    RELEASEDIR = "releasedir"
    FSYNCDIR = "fsyncdir"
    STATFS = "statfs"
    SETXATTR = "setxattr"
    GETXATTR = "getxattr"
    LISTXATTR = "listxattr"
    REMOVEXATTR = "removexattr"


class Addressing(Enum):
    """What a request names the object it acts on by."""

    INODE = "inode"
    ENTRY = "entry"
    """(parent inode, name): the path is the parent's path + name."""
    HANDLE = "handle"
    DIR_HANDLE = "dir_handle"


@dataclass(frozen=True, slots=True)
class OpTraits:
    """What every layer needs to know about an operation, said once."""

    addressing: Addressing = Addressing.INODE
    opens: str | None = None
    """The kind of handle it opens (HANDLE_FILE or HANDLE_DIRECTORY), if it opens one."""
    releases: str | None = None
    """The kind of handle it releases, if it releases one."""
    housekeeping: bool = False
    """The kernel never retries it and expects no failure: never faulted, never throttled."""
    direction: str | None = None
    """DIRECTION_READ or DIRECTION_WRITE for the operations that move file data."""
    returns_attributes: bool = False
    """Its reply holds the object's attributes (for create: the second element)."""


HANDLE_FILE = "file"
HANDLE_DIRECTORY = "directory"
DIRECTION_READ = "read"
DIRECTION_WRITE = "write"

_ENTRY_ATTRIBUTES = OpTraits(Addressing.ENTRY, returns_attributes=True)
TRAITS: dict[OpName, OpTraits] = {
    OpName.LOOKUP: _ENTRY_ATTRIBUTES,
    OpName.FORGET: OpTraits(housekeeping=True),
    OpName.GETATTR: OpTraits(returns_attributes=True),
    OpName.SETATTR: OpTraits(returns_attributes=True),
    OpName.READLINK: OpTraits(),
    OpName.SYMLINK: _ENTRY_ATTRIBUTES,
    OpName.MKNOD: _ENTRY_ATTRIBUTES,
    OpName.MKDIR: _ENTRY_ATTRIBUTES,
    OpName.UNLINK: OpTraits(Addressing.ENTRY),
    OpName.RMDIR: OpTraits(Addressing.ENTRY),
    OpName.RENAME: OpTraits(Addressing.ENTRY),
    OpName.LINK: OpTraits(returns_attributes=True),
    OpName.OPEN: OpTraits(opens=HANDLE_FILE),
    OpName.CREATE: OpTraits(Addressing.ENTRY, opens=HANDLE_FILE, returns_attributes=True),
    OpName.READ: OpTraits(Addressing.HANDLE, direction=DIRECTION_READ),
    OpName.WRITE: OpTraits(Addressing.HANDLE, direction=DIRECTION_WRITE),
    OpName.FLUSH: OpTraits(Addressing.HANDLE),
    OpName.RELEASE: OpTraits(Addressing.HANDLE, releases=HANDLE_FILE, housekeeping=True),
    OpName.FSYNC: OpTraits(Addressing.HANDLE),
    OpName.OPENDIR: OpTraits(opens=HANDLE_DIRECTORY),
    OpName.READDIR: OpTraits(Addressing.DIR_HANDLE),
    OpName.RELEASEDIR: OpTraits(Addressing.DIR_HANDLE, releases=HANDLE_DIRECTORY, housekeeping=True),
    OpName.FSYNCDIR: OpTraits(Addressing.DIR_HANDLE),
    OpName.STATFS: OpTraits(),
    OpName.SETXATTR: OpTraits(),
    OpName.GETXATTR: OpTraits(),
    OpName.LISTXATTR: OpTraits(),
    OpName.REMOVEXATTR: OpTraits(),
}
"""The one table of operation traits; every layer classifies operations through it.
(LINK names its new entry in ``new_parent``/``new_name``; its path is the linked inode's.)"""


def _having(predicate: Callable[[OpTraits], object]) -> frozenset[OpName]:
    return frozenset(name for name, traits in TRAITS.items() if predicate(traits))


FILE_OPENS = _having(lambda traits: traits.opens == HANDLE_FILE)
"""Operations that give the caller a file handle."""
HANDLE_OPS = _having(lambda traits: traits.addressing is Addressing.HANDLE)
"""Operations addressed by a file handle rather than an inode."""
DIR_HANDLE_OPS = _having(lambda traits: traits.addressing is Addressing.DIR_HANDLE)
"""Operations addressed by a directory handle."""
ENTRY_OPS = _having(lambda traits: traits.addressing is Addressing.ENTRY)
"""Operations addressed by (parent inode, name)."""
HOUSEKEEPING = _having(lambda traits: traits.housekeeping)
"""Operations the kernel never retries: never faulted, never throttled."""

EXPECTED_FAILURES: dict[str, str] = {
    OpName.LOOKUP.value: "ENOENT",
    OpName.GETXATTR.value: "ENODATA",
}
"""Failures that are answers, not trouble: the error.type (errno symbol) an operation ends with when what it asks
about does not exist.  A lookup's ENOENT is how every create starts; a getxattr's ENODATA is, on a write-heavy
mount, almost always the kernel's ``security.capability`` probe before each write (docs/performance.md, "One
request per write").  Metrics still count them under their error.type, exactly; they stay out of the error ratio,
the organic-error panels, the report's and the demo's failure lists, and tracing samples them like successes."""


def is_expected_failure(operation: str, error_type: str | None) -> bool:
    """Whether a request of ``operation`` that failed with ``error_type`` is an expected answer
    (``EXPECTED_FAILURES``); ``error_type`` None or empty (a success) is not a failure at all."""
    return bool(error_type) and EXPECTED_FAILURES.get(operation) == error_type


def expected_failures_text() -> str:
    """The expected failures as the dashboards, alerts and reports list them: ``lookup ENOENT, getxattr ENODATA``."""
    return ", ".join(f"{operation} {error_type}" for operation, error_type in EXPECTED_FAILURES.items())


def unexpected_failure_matchers(*extra: str) -> tuple[str, ...]:
    """PromQL selectors, each with ``extra`` matchers, whose union is every failed request but the expected ones.

    A matcher cannot exclude a pair of labels, so the failures are split into disjoint selectors: any failure of
    an operation without an expected errno, and each such operation's failures with any other errno.  A query
    takes the union of the rates of these selectors (``or``), and so counts each unexpected failure once.
    """
    operation = prometheus_label(ATTR_OPERATION)
    error_type = prometheus_label(ATTR_ERROR_TYPE)
    selectors = [[f'{operation}!~"{"|".join(EXPECTED_FAILURES)}"', f'{error_type}!=""']]
    selectors += [[f'{operation}="{name}"', f'{error_type}!~"{symbol}|"'] for name, symbol in EXPECTED_FAILURES.items()]
    return tuple("{" + ", ".join([*extra, *matchers]) + "}" for matchers in selectors)


# -- tracing: span names and attribute keys -------------------------------------------------
# OpenTelemetry semantic conventions where they exist (file.*, process.*, error.type), and a
# fuse.* namespace otherwise, after the NFS precedent nfs.operation.name.

SPAN_PREFIX = "fuse."
SPAN_NAMES = {op: SPAN_PREFIX + op.value for op in OpName}
"""Low-cardinality span name per operation."""

SPAN_FILE_SESSION = "fuse.file"
SPAN_DIRECTORY_SESSION = "fuse.directory"
SPAN_ACTIVITY = "fuse.activity"
"""Parent spans: a file handle's life, a directory handle's life, a process's handle-less operations."""
SPAN_RECONFIGURE = "interposer.reconfigure"
"""A mount's runtime sections replaced (ctl set, or a VolumeExperiment through the node plugin): a trace of its own."""
ATTR_RECONFIGURE_SECTIONS = "interposer.reconfigure.sections"
ATTR_RECONFIGURE_SOURCE = "interposer.reconfigure.source"
"""Who asked: 'VolumeExperiment NAMESPACE/NAME generation N', or 'ctl set'."""

ATTR_OPERATION = "fuse.operation.name"
ATTR_FILE_PATH = "file.path"
ATTR_FILE_INODE = "file.inode"
ATTR_NEW_PATH = "fuse.new_path"
ATTR_OTHER_PATHS = "fuse.other_paths"
ATTR_DELETED = "fuse.deleted"
ATTR_HANDLE = "fuse.handle"
ATTR_OFFSET = "fuse.offset"
ATTR_SIZE = "fuse.size"
ATTR_TRANSFERRED = "fuse.transferred"
ATTR_FLAGS = "fuse.flags"
ATTR_PID = "process.pid"
ATTR_UID = "process.user.id"
ATTR_GID = "fuse.caller.gid"
ATTR_COMMAND = "process.command"
ATTR_ERROR_TYPE = "error.type"
ATTR_ERRNO = "fuse.errno"
ATTR_FAULT = "fuse.fault.type"
ATTR_SEGMENT = "fuse.segment"
ATTR_SESSION_OPERATIONS = "fuse.session.operations"
ATTR_SESSION_ERRORS = "fuse.session.errors"
ATTR_SESSION_BYTES_READ = "fuse.session.bytes_read"
ATTR_SESSION_BYTES_WRITTEN = "fuse.session.bytes_written"
ATTR_SESSION_OPS_PREFIX = "fuse.session.ops."
"""Followed by an operation name: how many of that operation the session (segment) saw."""

# -- trace context propagation (docs/tracing.md, "Continuing the caller's trace") ------------------
TRACEPARENT_VARIABLE = "TRACEPARENT"
TRACESTATE_VARIABLE = "TRACESTATE"
"""OpenTelemetry's environment carrier of the W3C trace context: a caller's file I/O continues this trace."""
TRACE_CONTEXT_XATTR = "user.cnfs-interposer.trace-context"
"""The reserved extended attribute of the mount root by which a thread announces its span context
(``NAME``: the calling thread; ``NAME.<tid>``: another thread of the same process)."""
TRACED_MOUNTS_VARIABLE = "INTERPOSER_TRACED_MOUNTS"
"""Mountpoints ``interposer.traced_io()`` announces to when given none, separated by ``os.pathsep``."""
STATUS_CONTEXT_MALFORMED = "trace_context_malformed"
"""Status counter: TRACEPARENT values in callers' environments and announced contexts that were not valid."""
STATUS_ENVIRONMENTS_READ = "environments_read"
"""Status counter: callers' environments read (once per process)."""
STATUS_ENVIRONMENTS_UNREADABLE = "environments_unreadable"
"""Status counter: callers whose environment could not be read (gone, or not visible to the mount)."""
STATUS_PROCESSES_CACHED = "processes_cached"
STATUS_THREADS_ANNOUNCED = "threads_announced"

EVENT_FAULT = "fuse.fault.injected"
EVENT_THROTTLE = "fuse.throttle.wait"
"""Span events that the fault and throttle layers add to the operation they acted on."""

# -- resource attributes --------------------------------------------------------------------
RESOURCE_MOUNTPOINT = "fuse.mountpoint"
RESOURCE_BACKING = "fuse.backing"
RESOURCE_VOLUME_ID = "fuse.volume.id"
RESOURCE_K8S_POD = "k8s.pod.name"
RESOURCE_K8S_POD_UID = "k8s.pod.uid"
RESOURCE_K8S_NAMESPACE = "k8s.namespace.name"
RESOURCE_K8S_NODE = "k8s.node.name"

K8S_ENVIRONMENT = {
    RESOURCE_K8S_POD: "K8S_POD_NAME",
    RESOURCE_K8S_POD_UID: "K8S_POD_UID",
    RESOURCE_K8S_NAMESPACE: "K8S_NAMESPACE_NAME",
    RESOURCE_K8S_NODE: "K8S_NODE_NAME",
}
"""Resource attributes filled from the process's environment: the chart sets K8S_NODE_NAME by the Downward
API, and the CSI driver sets the pod's variables for each volume's interposer."""

RESOURCE_LABELS = (RESOURCE_K8S_NAMESPACE, RESOURCE_K8S_POD, RESOURCE_VOLUME_ID, RESOURCE_MOUNTPOINT)
"""Resource attributes that also label every series (one value per mount, so cardinality stays bounded):
the scrape endpoint adds them, the collector's Prometheus exporter converts them, the dashboards filter by them."""


def prometheus_label(attribute: str) -> str:
    """The label name Prometheus stores for an attribute or resource attribute: dots become underscores."""
    return attribute.replace(".", "_")


SERVICE_NAME_DEFAULT = "cnfs-interposer"
SCOPE_NAME = "interposer"
"""The instrumentation scope of every span and instrument."""

ATTR_FAULT_RULE = "fuse.fault.rule"
ATTR_FAULT_ERRNO = "fuse.fault.errno"
ATTR_FAULT_DELAY = "fuse.fault.delay"
ATTR_FAULT_OFFSET = "fuse.fault.offset"
ATTR_FAULT_BYTES = "fuse.fault.bytes"
"""On an EVENT_FAULT event (besides fuse.fault.type): the rule, and the errno, delay in seconds, offset of
corrupted bytes, or bytes a short call moved."""

ATTR_THROTTLE_WAIT = "fuse.throttle.wait"
"""On an EVENT_THROTTLE event: the seconds the request waited."""
ATTR_THROTTLE_LIMIT = "fuse.throttle.limit"
"""On an EVENT_THROTTLE event and the wait metric: which limit made the request wait."""


# -- metrics --------------------------------------------------------------------------------
# OpenTelemetry names (dots, units apart); Prometheus stores them translated: dots become
# underscores, the unit becomes a suffix, counters gain _total.  docs/metrics.md is generated
# from these definitions and a test proves the translation against a real Prometheus.

ATTR_IO_DIRECTION = "disk.io.direction"
ATTR_HANDLE_KIND = "fuse.handle.kind"
ATTR_TELEMETRY_SIGNAL = "fuse.telemetry.signal"

SIGNAL_TRACES = "traces"
SIGNAL_METRICS = "metrics"

DURATION_BUCKETS = (*(round(base * 10.0**exponent, 9) for exponent in range(-5, 1) for base in (1, 2.5, 5)), 10.0)
"""Histogram bucket bounds in seconds, 10 µs to 10 s: FUSE requests take tens of microseconds."""


class InstrumentKind(StrEnum):
    """OpenTelemetry instrument kinds."""

    HISTOGRAM = "histogram"
    COUNTER = "counter"
    UP_DOWN_COUNTER = "updowncounter"


@dataclass(frozen=True)
class Instrument:
    """One metric: everything the interposer, the dashboards, the alerts and docs/metrics.md need."""

    name: str
    kind: InstrumentKind
    unit: str
    labels: tuple[str, ...]
    description: str

    @property
    def prometheus_name(self) -> str:
        """The metric family name Prometheus stores (histograms add _bucket, _sum and _count)."""
        name = self.name.replace(".", "_")
        unit = prometheus_unit(self.unit)
        if unit and not name.endswith("_" + unit):
            name += "_" + unit
        return name + "_total" if self.kind is InstrumentKind.COUNTER else name

    @property
    def prometheus_labels(self) -> tuple[str, ...]:
        """The label names Prometheus stores: dots become underscores."""
        return tuple(prometheus_label(label) for label in self.labels)

    def label(self, attribute: str) -> str:
        """The Prometheus label this instrument stores ``attribute`` under, looked up by name: a position would
        silently name another label once the labels are reordered.  KeyError if the instrument has no such label,
        so a query on a label the series does not carry fails where it is written."""
        if attribute not in self.labels:
            raise KeyError(f"{self.name} has no label {attribute!r}; its labels: {', '.join(self.labels) or 'none'}")
        return prometheus_label(attribute)

    @property
    def prometheus_type(self) -> str:
        """The metric type Prometheus stores: an up-down counter's current value is a gauge."""
        return "gauge" if self.kind is InstrumentKind.UP_DOWN_COUNTER else self.kind.value

    def series(self, suffix: str = "") -> str:
        """A series name to query: ``series('count')`` of a histogram is its ``_count``."""
        return f"{self.prometheus_name}_{suffix}" if suffix else self.prometheus_name


_PROMETHEUS_UNITS = {"s": "seconds", "By": "bytes"}
"""The unit suffixes in use; annotations such as {operation} add none."""


def prometheus_unit(unit: str) -> str:
    """The unit Prometheus names a metric with: seconds, bytes, or none for an annotation like {operation}."""
    return _PROMETHEUS_UNITS.get(unit, "")


OPERATION_DURATION = Instrument(
    "fuse.operation.duration",
    InstrumentKind.HISTOGRAM,
    "s",
    (ATTR_OPERATION, ATTR_ERROR_TYPE),
    "Time to serve one FUSE request, throttle waits and injected latency included; error.type set on failure. "
    "Its count is the number of requests. Expected failures are counted too, and left out of the error ratio: "
    f"{expected_failures_text()} (names.EXPECTED_FAILURES).",
)
IO_BYTES = Instrument(
    "fuse.io",
    InstrumentKind.COUNTER,
    "By",
    (ATTR_IO_DIRECTION,),
    "Bytes actually read and written through the mount (not the sizes requested).",
)
OPERATIONS_ACTIVE = Instrument(
    "fuse.operation.active",
    InstrumentKind.UP_DOWN_COUNTER,
    "{operation}",
    (ATTR_OPERATION,),
    "Requests being served right now.",
)
HANDLES_OPEN = Instrument(
    "fuse.handle.open",
    InstrumentKind.UP_DOWN_COUNTER,
    "{handle}",
    (ATTR_HANDLE_KIND,),
    "Open file and directory handles (kind: file or directory).",
)
DIRECTORIES_NET_CREATED = Instrument(
    "fuse.directory.net_created",
    InstrumentKind.UP_DOWN_COUNTER,
    "{directory}",
    (),
    "Directories created minus directories removed through the mount since it started.",
)
FAULTS_INJECTED = Instrument(
    "fuse.fault.injected",
    InstrumentKind.COUNTER,
    "{fault}",
    (ATTR_FAULT, ATTR_OPERATION),
    "Faults the fault layer injected, by fault type and operation.",
)
THROTTLE_WAIT = Instrument(
    "fuse.throttle.wait.duration",
    InstrumentKind.HISTOGRAM,
    "s",
    (ATTR_THROTTLE_LIMIT,),
    "Time requests waited for a throttle limit, by the limit that held them.",
)
SPANS_DROPPED = Instrument(
    "fuse.telemetry.spans.dropped",
    InstrumentKind.COUNTER,
    "{span}",
    (),
    "Spans dropped, counted where they were dropped: the export process behind or gone, its export queue "
    "full, or an export that failed (a slow or dead collector).",
)
EXPORT_FAILURES = Instrument(
    "fuse.telemetry.export.failures",
    InstrumentKind.COUNTER,
    "{failure}",
    (ATTR_TELEMETRY_SIGNAL,),
    "Failed telemetry exports, by signal (traces or metrics).",
)

INSTRUMENTS = (
    OPERATION_DURATION,
    IO_BYTES,
    OPERATIONS_ACTIVE,
    HANDLES_OPEN,
    DIRECTORIES_NET_CREATED,
    FAULTS_INJECTED,
    THROTTLE_WAIT,
    SPANS_DROPPED,
    EXPORT_FAILURES,
)
"""Every metric the interposer exports."""

CSI_DRIVER_NAME = "csi.cnfs-interposer.io"
"""The CSI driver's name: GetPluginInfo, the CSIDriver object, StorageClasses and pods' volumes all use it."""

PROFILE_VARIABLE = "INTERPOSER_PROFILE"
"""When set, a mount serves under cProfile and writes the profile of its serving loop (start-up excluded) to this
path when it stops: ``python -m benchmarks --profile`` reads it (benchmarks/profile.py)."""
