"""The interposer's configuration: one typed, validated model for YAML, CLI flags and the control API.

Every source is merged into one plain mapping first and validated once, so a
bad value is reported with its full field name whatever its origin, and a
config that fails validation changes nothing.
"""

from __future__ import annotations

import importlib
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from .layers.crash.model import CrashConfig
from .layers.faults.model import FaultsConfig
from .layers.throttle.model import ThrottleConfig
from .section import Section

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ConfigError(ValueError):
    """A configuration was rejected; the message lists every bad field."""


class CacheConfig(Section):
    """Kernel caching.  Caching hides requests from the layers: fewer spans, faster I/O.

    The defaults were chosen by measurement (docs/performance.md): one second of
    entry and attribute caching makes stat-heavy work several times faster while
    every change made through the mount stays visible at once, because the
    kernel updates its cache from our replies.
    """

    entry_timeout: float = Field(1.0, ge=0, le=86400, description="Seconds the kernel caches a name lookup.")
    attr_timeout: float = Field(1.0, ge=0, le=86400, description="Seconds the kernel caches file attributes.")
    negative_timeout: float = Field(
        0.0, ge=0, le=86400, description="Seconds the kernel caches a failed lookup (ENOENT)."
    )
    keep_cache: bool = Field(False, description="Keep a file's page cache across opens.")
    writeback_cache: bool = Field(False, description="Let the kernel batch writes in its page cache.")
    direct_io: bool = Field(False, description="Bypass the page cache for every file.")


class FuseConfig(Section):
    """How the file system is mounted and served."""

    allow_other: bool = Field(True, description="Let users other than the mounting one use the mount.")
    max_workers: int = Field(64, ge=1, le=4096, description="Most requests served concurrently.")
    fsname: str = Field("interposer", pattern=r"^[\w.-]{1,64}$", description="Source name in /proc/mounts.")
    read_only: bool = Field(False, description="Mount read-only: every write fails with EROFS in the kernel.")
    allow_nonempty: bool = Field(
        False,
        description="Mount over a directory that holds entries, hiding them until unmount; unset, "
        "'interposer mount' refuses such a directory.",
    )
    xattrs: bool = Field(
        True,
        description="Serve extended attributes. false: the first getxattr or listxattr is answered ENOSYS and the "
        "kernel fails every later one itself (EOPNOTSUPP), so a write costs one request, not two (no "
        "security.capability probe before it); setxattr fails with EOPNOTSUPP (docs/performance.md).",
    )


class FakeConfig(Section):
    """The in-memory backend: nothing reaches the disk."""

    data: Literal["keep", "discard"] = Field(
        "keep", description="keep: written data is kept in memory (up to memory_cap); discard: only sizes are kept."
    )
    read: Literal["zeros", "pattern"] = Field(
        "zeros", description="What reads of discarded data return: zeros, or bytes 0..255 repeating by offset."
    )
    memory_cap: int = Field(1 << 30, ge=1 << 20, description="Bytes of kept data; beyond, writes fail with ENOSPC.")


class BackendConfig(Section):
    """Where the data lives."""

    kind: Literal["passthrough", "fake"] = Field(
        "passthrough", description="passthrough: the backing directory; fake: memory, the backing directory untouched."
    )
    fake: FakeConfig = FakeConfig()

    max_inode_fds: int | None = Field(
        None,
        ge=16,
        description="O_PATH descriptors kept open for known inodes; unset: half the process descriptor limit.",
    )


class OtlpSection(Section):
    """Where a signal goes over OTLP.  Unset values fall back to the standard OTEL_EXPORTER_OTLP_* variables."""

    endpoint: str | None = Field(None, description="OTLP endpoint; unset: OTEL_EXPORTER_OTLP_(<SIGNAL>_)ENDPOINT.")
    protocol: Literal["grpc", "http/protobuf"] | None = Field(
        None, description="OTLP protocol; unset: OTEL_EXPORTER_OTLP_(<SIGNAL>_)PROTOCOL, else grpc."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="OTLP headers; unset: OTEL_EXPORTER_OTLP_(<SIGNAL>_)HEADERS."
    )


AlwaysKept = Literal["errors", "negative_lookups", "faults"]
"""What sampling never drops: failed operations (but the expected ones, names.EXPECTED_FAILURES: a lookup's ENOENT,
a getxattr's ENODATA), lookups that found no entry (how every create starts: an error for metrics, a success for
sampling unless listed), and operations a fault was injected into."""
KEEP_ERRORS: AlwaysKept = "errors"
KEEP_NEGATIVE_LOOKUPS: AlwaysKept = "negative_lookups"
KEEP_FAULTS: AlwaysKept = "faults"


class TracingConfig(OtlpSection):
    """Spans for every operation."""

    enabled: bool = Field(True, description="Emit a span per operation.")
    exporter: Literal["file", "otlp", "none"] | None = Field(
        None,
        description="Where spans go; unset: OTEL_TRACES_EXPORTER, else 'otlp' when an OTLP endpoint is set, "
        "else 'file' (the embedded default).",
    )
    file: Path | None = Field(
        None,
        description="Span file for the 'file' exporter; unset: a new file per mount in the state directory, "
        "kept after unmount.",
    )
    file_max_bytes: int = Field(64 << 20, ge=1 << 16, description="The span file rotates (one old copy) past this.")
    kept_max_bytes: int = Field(
        1 << 30,
        ge=1 << 20,
        description="Total size of the span files kept in the state directory (those of mounts without "
        "tracing.file); past it, a mount removes the oldest when it starts and stops, never a running mount's.",
    )
    sample_ratio: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Share of parent spans kept, each with its operations; what always_keep names is kept "
        "whatever the ratio. Unset: OTEL_TRACES_SAMPLER(_ARG), else 1.",
    )
    always_keep: tuple[AlwaysKept, ...] = Field(
        (KEEP_ERRORS, KEEP_FAULTS),
        description="Operations kept whatever the sampling: errors (every failure but the expected ones: a "
        "lookup's ENOENT, a getxattr's ENODATA such as the kernel's probe before each write), "
        "negative_lookups (a lookup's ENOENT, how every create starts), faults (an injected fault).",
    )
    activity_idle_gap: float = Field(
        1.0, gt=0, le=3600, description="Seconds of quiet after which a process's activity span ends."
    )
    segment_max_seconds: float = Field(30.0, gt=0, le=86400, description="Longest a parent span stays open.")
    segment_max_operations: int = Field(1000, ge=1, description="Most children a parent span segment holds.")
    max_queue_size: int = Field(8192, ge=64, le=1 << 20, description="Spans buffered for export; beyond: dropped.")
    export_delay: float = Field(1.0, gt=0, le=60, description="Seconds between batch exports.")
    propagation: bool = Field(
        True,
        description="Continue callers' traces: parent spans become children of the span in the caller's "
        "TRACEPARENT environment variable or of the context its thread announced (docs/tracing.md).",
    )
    context_cache_size: int = Field(
        4096, ge=1, le=1 << 20, description="Processes, threads and announcements whose trace context is kept."
    )


MetricsExporterName = Literal["otlp", "prometheus"]


class MetricsConfig(OtlpSection):
    """Metrics for every operation, pushed over OTLP, served for Prometheus to scrape, or both."""

    enabled: bool = Field(True, description="Measure every operation.")
    exporters: tuple[MetricsExporterName, ...] | None = Field(
        None,
        description="Where metrics go, any of otlp and prometheus (empty: nowhere); unset: OTEL_METRICS_EXPORTER, "
        "else otlp when an OTLP endpoint is set, else prometheus (the embedded default).",
    )
    export_interval: float | None = Field(
        None, gt=0, le=3600, description="Seconds between OTLP pushes; unset: OTEL_METRIC_EXPORT_INTERVAL, else 10."
    )
    prometheus_host: str | None = Field(
        None,
        description="Address the scrape endpoint listens on; unset: OTEL_EXPORTER_PROMETHEUS_HOST, else 127.0.0.1.",
    )
    prometheus_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the scrape endpoint (0: any free port); unset: OTEL_EXPORTER_PROMETHEUS_PORT, else 9464, "
        "or a free port when 9464 is taken.",
    )


class ControlConfig(Section):
    """The control socket of a running mount."""

    socket: Path | None = Field(None, description="Unix socket path; derived from the mountpoint when unset.")


class InterposerConfig(Section):
    """Everything one mount is configured with."""

    cache: CacheConfig = CacheConfig()
    fuse: FuseConfig = FuseConfig()
    backend: BackendConfig = BackendConfig()
    tracing: TracingConfig = TracingConfig()
    metrics: MetricsConfig = MetricsConfig()
    throttle: ThrottleConfig = ThrottleConfig()
    faults: FaultsConfig = FaultsConfig()
    crash: CrashConfig = CrashConfig()
    control: ControlConfig = ControlConfig()
    extra_layers: tuple[str, ...] = Field(
        (),
        description="Extra layers, 'module:attribute' each, innermost last, placed after the fault layer and "
        "before the crash journal.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log verbosity on stderr.")
    volume_id: str | None = Field(None, description="Volume id for the telemetry resource (set by the CSI driver).")

    @model_validator(mode="after")
    def _journal_needs_files(self) -> InterposerConfig:
        if self.crash.enabled and self.backend.kind != "passthrough":
            raise ValueError("crash.enabled needs backend.kind: passthrough (the fake backend never syncs)")
        return self

    @field_validator("extra_layers")
    @classmethod
    def _importable(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for spec in value:
            if not _IMPORT_PATH.match(spec):
                raise ValueError(f"{spec!r} is not of the form 'module:attribute'")
            module, _, attribute = spec.partition(":")
            try:
                if not hasattr(importlib.import_module(module), attribute):
                    raise ValueError(f"module {module!r} has no attribute {attribute!r}")
            except ImportError as exc:
                raise ValueError(f"cannot import {module!r}: {exc}") from None
        return value


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The models a field holds: itself, or inside Optional, a tuple or a union."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for argument in typing.get_args(annotation) for model in _models_in(argument)]


def _section_for(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model at a validation error's location, so an unknown key can be answered with the allowed ones."""
    model: type[BaseModel] = InterposerConfig
    for part in loc:
        if isinstance(part, int):
            continue  # an index into a list of models
        field = model.model_fields.get(part)
        models = [] if field is None else _models_in(field.annotation)
        if len(models) != 1:
            return None
        model = models[0]
    return model


def describe_errors(error: ValidationError, flags: Mapping[str, str] | None = None) -> str:
    """One line per bad field: its dotted name, the CLI flag that set it, and what is allowed."""
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        field = ".".join(str(part) for part in loc)
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            section = _section_for(loc[:-1])
            if section is not None:
                message = f"unknown field; allowed fields: {', '.join(section.model_fields)}"
        flag = (flags or {}).get(field)
        lines.append(f"{field}{f' ({flag})' if flag else ''}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into ``base``; mappings merge, everything else replaces."""
    merged = dict(base)
    for key, value in overrides.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merge(current, value)
        else:
            merged[key] = value
    return merged


def yaml_error(path: Path, error: yaml.YAMLError) -> str:
    """Where a YAML file is broken, as ``FILE:LINE:COLUMN`` (editors jump there), and what is wrong, with the line.

    PyYAML's own message names ``"<unicode string>"`` for text it was given, not the file the text came from.
    """
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem_mark is None:
        return f"{path}: not valid YAML: {error}"
    mark = error.problem_mark
    problem = error.problem or "syntax error"
    context = error.context_mark
    if error.context and context is not None and (context.line, context.column) != (mark.line, mark.column):
        problem += f" ({error.context} at line {context.line + 1}, column {context.column + 1})"
    snippet = mark.get_snippet() or ""
    shown = f"\n{snippet}" if snippet.split("\n")[0].strip() else ""  # the end of the file: no line to show
    return f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {problem}{shown}"


def read_config_file(path: Path) -> dict[str, Any]:
    """The raw mapping in a YAML config file; errors name the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error(path, exc)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, not {type(data).__name__}")
    return data


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    flags: Mapping[str, str] | None = None,
) -> InterposerConfig:
    """Validate a config file merged with overrides (CLI flags, volume attributes).

    ``flags`` maps dotted field names to the CLI flags that set them, so errors
    can name what the user actually typed.
    """
    raw = read_config_file(path) if path is not None else {}
    try:
        return InterposerConfig.model_validate(merge(raw, overrides or {}))
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, flags)) from None
