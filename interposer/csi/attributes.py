"""Volume attributes and StorageClass parameters: the interposer configuration of one volume.

A volume is configured by string key/value pairs: ``config`` holds a whole YAML
config, and any dotted config field (``tracing.sample_ratio``,
``throttle.read_iops``, ``faults.rules`` as YAML, ...) overrides it.  Values are
parsed as YAML scalars, then the merged mapping is validated by the same model
as a config file, so a bad value is refused with the field's name before
anything is created.  A volume may set only the fields of ``VOLUME_FIELDS``:
an allow-list, so a config field added later is the driver's until it is
listed here.  Host paths, code to import, listening addresses, the mount's
options, its worker count and its descriptor pool stay the driver's.

``liveControl: "true"`` opts a volume in to VolumeExperiments (``experiment.py``): without it, a resource that
selects the volume's pod leaves the volume alone and says so in its status.  Who may create such resources
is a matter of RBAC; whether a volume may be touched is the volume's owner's (its StorageClass or its inline
attributes).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..config import ConfigError, InterposerConfig, load_config, merge
from ..names import K8S_ENVIRONMENT, RESOURCE_K8S_NAMESPACE, RESOURCE_K8S_POD, RESOURCE_K8S_POD_UID
from .errors import invalid

KUBELET_PREFIX = "csi.storage.k8s.io/"
POD_NAME = KUBELET_PREFIX + "pod.name"
POD_NAMESPACE = KUBELET_PREFIX + "pod.namespace"
POD_UID = KUBELET_PREFIX + "pod.uid"
EPHEMERAL = KUBELET_PREFIX + "ephemeral"

BACKING_DIR = "backingDir"
CONFIG = "config"
LIVE_CONTROL = "liveControl"

VOLUME_FIELDS = (
    "cache",
    "fuse.xattrs",
    "backend.kind",
    "backend.fake.data",
    "backend.fake.read",
    "tracing.enabled",
    "tracing.exporter",
    "tracing.sample_ratio",
    "tracing.export_delay",
    "tracing.activity_idle_gap",
    "tracing.segment_max_seconds",
    "tracing.segment_max_operations",
    "tracing.always_keep",
    "tracing.propagation",
    "metrics.enabled",
    "throttle",
    "faults",
    "crash",
    "log_level",
)
"""Config fields (and whole sections) a volume's attributes may set; every other field is the driver's."""
ALLOWED = ", ".join([BACKING_DIR, CONFIG, LIVE_CONTROL, *VOLUME_FIELDS])

POD_ENVIRONMENT = {
    POD_NAME: K8S_ENVIRONMENT[RESOURCE_K8S_POD],
    POD_NAMESPACE: K8S_ENVIRONMENT[RESOURCE_K8S_NAMESPACE],
    POD_UID: K8S_ENVIRONMENT[RESOURCE_K8S_POD_UID],
}
"""Kubelet's pod attributes, handed to the interposer as the variables its telemetry resource reads."""


@dataclass(frozen=True)
class VolumeAttributes:
    """What a volume's attributes ask for, validated."""

    config: dict[str, Any]
    backing_dir: str | None = None
    ephemeral: bool = False
    live_control: bool = False
    """VolumeExperiments may change the volume's runtime sections while it is published."""
    pod_environment: dict[str, str] = field(default_factory=dict)


def _scalar(key: str, text: str, origin: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise invalid(f"{origin}[{key}]: not valid YAML: {exc}") from None


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    result: Any = value
    for part in reversed(dotted.split(".")):
        result = {part: result}
    return dict(result)


def _settable(dotted: str) -> bool:
    return any(dotted == name or dotted.startswith(name + ".") for name in VOLUME_FIELDS)


def _refused_fields(config: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """The dotted names of the fields in ``config`` that a volume may not set."""
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if _settable(dotted):
            continue
        if isinstance(value, Mapping) and value:
            yield from _refused_fields(value, dotted + ".")
        else:
            yield dotted


def parse(attributes: Mapping[str, str], origin: str, *, allow_backing: bool = True) -> VolumeAttributes:
    """Validate ``attributes`` (``origin`` names them in errors: volume_context, parameters)."""
    config: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    backing_dir = None
    live_control = False
    for key, text in sorted(attributes.items()):
        if key.startswith(KUBELET_PREFIX):
            continue
        if key == BACKING_DIR:
            if not allow_backing:
                raise invalid(f"{origin}[{BACKING_DIR}]: not settable here: set by the driver for provisioned volumes")
            backing_dir = text
        elif key == LIVE_CONTROL:
            live_control = _scalar(key, text, origin)
            if not isinstance(live_control, bool):
                raise invalid(f'{origin}[{LIVE_CONTROL}]: {text!r} is not a boolean; allowed: "true" or "false"')
        elif key == CONFIG:
            loaded = _scalar(key, text, origin)
            if not isinstance(loaded, dict):
                raise invalid(f"{origin}[{CONFIG}]: must be a YAML mapping of config fields")
            config = loaded
        elif key.split(".")[0] in InterposerConfig.model_fields:
            overrides = merge(overrides, _nested(key, _scalar(key, text, origin)))
        else:
            raise invalid(f"{origin}[{key}]: unknown attribute; allowed: {ALLOWED} (and fields under them)")
    config = merge(config, overrides)
    refused = sorted(_refused_fields(config))
    if refused:
        raise invalid(
            f"{origin}[{', '.join(refused)}]: not settable by a volume (the driver's); "
            f"allowed: {ALLOWED} (and fields under them)"
        )
    try:
        load_config(None, config)
    except ConfigError as exc:
        raise invalid(f"{origin}: {exc}") from None
    return VolumeAttributes(
        config=config,
        backing_dir=backing_dir,
        ephemeral=attributes.get(EPHEMERAL) == "true",
        live_control=live_control,
        pod_environment={variable: attributes[key] for key, variable in POD_ENVIRONMENT.items() if attributes.get(key)},
    )
