"""VolumeExperiment: the custom resource that changes running volumes' faults, throttle and crash sections.

A platform engineer's ``kubectl apply`` does what ``interposer ctl MOUNTPOINT set`` does on the node: its
``faults``, ``throttle`` and ``crash`` are the very sections ``ctl set`` takes, the same models
(``interposer.config``), so the CRD's schema (``crd.py``) and the node plugin's validation cannot disagree.

Everything here is pure, for the reconciler (``live_control.py``) and the tests:

- which pods a resource selects (a label selector, in the resource's own namespace only), and which of a
  pod's volumes (``volumeNames``, or all);
- when it expires: ``metadata.creationTimestamp + spec.duration``, a fact of the object itself, so a plugin
  that was down when it passed still knows on start, and every node agrees;
- how several resources compose on one volume: ordered by creationTimestamp, then name, each section a
  resource sets replaces the one before, whole, as ``ctl set`` replaces sections; a section no resource sets
  is the volume's own.  No resource is refused: the later one wins where they overlap, and the status of the
  earlier one says which of its sections are overridden and by whom.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..config import describe_errors
from ..layers.crash.model import CrashConfig
from ..layers.faults.model import FaultsConfig
from ..layers.throttle.model import ThrottleConfig
from ..mount.reconfigure import RUNTIME_SECTIONS

GROUP = "cnfs-interposer.io"
VERSION = "v1alpha1"
KIND = "VolumeExperiment"
PLURAL = "volumeexperiments"
SINGULAR = "volumeexperiment"
SHORT_NAMES = ("volx",)
API_VERSION = f"{GROUP}/{VERSION}"

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
"""Go's duration syntax without signs or micro units, as IOChaos and kubectl write durations: 90s, 1h30m."""
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

CONDITION_SELECTED = "Selected"
CONDITION_APPLIED = "Applied"
CONDITION_EXPIRED = "Expired"
CONDITION_INVALID = "Invalid"
CONDITIONS = (CONDITION_SELECTED, CONDITION_APPLIED, CONDITION_EXPIRED, CONDITION_INVALID)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class LabelSelectorRequirement(_Strict):
    """One of metav1.LabelSelector's matchExpressions."""

    key: str = Field(min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()


class LabelSelector(_Strict):
    """Kubernetes' own label selector: every matchLabels pair and every expression must hold; empty selects all."""

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: tuple[LabelSelectorRequirement, ...] = Field((), alias="matchExpressions")

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(key) != value for key, value in self.match_labels.items()):
            return False
        for requirement in self.match_expressions:
            present = requirement.key in labels
            value = labels.get(requirement.key)
            holds = {
                "In": present and value in requirement.values,
                "NotIn": not present or value not in requirement.values,
                "Exists": present,
                "DoesNotExist": not present,
            }[requirement.operator]
            if not holds:
                return False
        return True


class ExperimentSpec(_Strict):
    """What a VolumeExperiment asks: which volumes, which sections, for how long, and whether it is paused."""

    selector: LabelSelector = Field(
        description="Pods whose volumes are targeted, in the resource's own namespace only; {} selects every pod."
    )
    volume_names: tuple[str, ...] = Field(
        (),
        alias="volumeNames",
        description="Names of the pods' volumes (pod.spec.volumes[].name) to target; empty: every volume of "
        "this driver that opts in.",
    )
    faults: FaultsConfig | None = Field(None, description="Replaces the volume's faults section while active.")
    throttle: ThrottleConfig | None = Field(None, description="Replaces the volume's throttle section while active.")
    crash: CrashConfig | None = Field(None, description="Replaces the volume's crash section while active.")
    duration: str | None = Field(
        None,
        pattern=DURATION_PATTERN,
        description="How long after its creation the resource is active (90s, 10m, 1h30m); unset: until deleted.",
    )
    paused: bool = Field(False, description="While true, the targeted volumes run with their own sections.")

    @model_validator(mode="after")
    def _some_section(self) -> ExperimentSpec:
        if not self.sections():
            raise ValueError(f"at least one of {', '.join(RUNTIME_SECTIONS)} is required")
        return self

    def sections(self) -> dict[str, dict[str, Any]]:
        """The runtime sections this resource sets, as ``ctl set`` sends them."""
        return {
            name: section.model_dump(mode="json")
            for name in RUNTIME_SECTIONS
            if (section := getattr(self, name)) is not None
        }


SPEC_SECTIONS_REQUIRED = "has(self.faults) || has(self.throttle) || has(self.crash)"
"""The CRD's own check of ``_some_section``, so the API server refuses a resource that would change nothing."""


def duration_seconds(text: str) -> float:
    """``1h30m`` → 5400.0; the pattern has been checked by the model (and the API server)."""
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text))


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp as the API server writes it (``2026-12-04T17:00:00Z``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Experiment:
    """One VolumeExperiment as the reconciler sees it: its identity, its parsed spec or why it is invalid."""

    namespace: str
    name: str
    uid: str
    generation: int
    created: datetime
    spec: ExperimentSpec | None
    invalid: str | None = None
    """Why the spec was refused by the model (a rule the CRD's schema cannot express), field names included."""

    @classmethod
    def from_object(cls, body: Mapping[str, Any]) -> Experiment:
        metadata = body["metadata"]
        spec, invalid = None, None
        try:
            spec = ExperimentSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            invalid = describe_errors(exc).replace("invalid configuration:", "invalid spec:", 1)
        return cls(
            namespace=metadata["namespace"],
            name=metadata["name"],
            uid=metadata["uid"],
            generation=int(metadata.get("generation", 1)),
            created=parse_time(metadata["creationTimestamp"]),
            spec=spec,
            invalid=invalid,
        )

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def expires(self) -> datetime | None:
        """When it stops applying; None: never (no duration, or an invalid spec that never applies)."""
        if self.spec is None or self.spec.duration is None:
            return None
        return self.created + timedelta(seconds=duration_seconds(self.spec.duration))

    def expired(self, now: datetime) -> bool:
        expires = self.expires()
        return expires is not None and now >= expires

    def active(self, now: datetime) -> bool:
        """Applies to the volumes it selects: valid, not paused, not expired."""
        return self.spec is not None and not self.spec.paused and not self.expired(now)

    def selects(self, namespace: str, labels: Mapping[str, str], volume_name: str | None) -> bool:
        """Whether a pod's volume is a target; a volume whose pod name cannot be told is matched by selector only
        when no volumeNames are given."""
        if self.spec is None or namespace != self.namespace or not self.spec.selector.matches(labels):
            return False
        names = self.spec.volume_names
        return not names or volume_name in names


def order(experiments: Iterable[Experiment]) -> list[Experiment]:
    """The composition order: oldest first, then by name; later ones override earlier ones per section."""
    return sorted(experiments, key=lambda experiment: (experiment.created, experiment.name))


@dataclass(frozen=True)
class Composition:
    """The sections a volume runs with, and which resource supplied each (absent: the volume's own)."""

    sections: dict[str, dict[str, Any]]
    sources: dict[str, Experiment]

    def overridden(self, experiment: Experiment) -> dict[str, str]:
        """The sections ``experiment`` sets that a later resource overrides: section → that resource."""
        assert experiment.spec is not None
        return {
            name: source.ref
            for name in experiment.spec.sections()
            if (source := self.sources[name]).uid != experiment.uid
        }


def compose(own: Mapping[str, dict[str, Any]], experiments: Sequence[Experiment]) -> Composition:
    """The effective runtime sections of a volume: its own, replaced section by section by the active
    resources that select it, in ``order``."""
    sections = {name: own[name] for name in RUNTIME_SECTIONS}
    sources: dict[str, Experiment] = {}
    for experiment in order(experiments):
        assert experiment.spec is not None, "only valid resources compose"
        for name, section in experiment.spec.sections().items():
            sections[name] = section
            sources[name] = experiment
    return Composition(sections, sources)


def next_expiry(experiments: Iterable[Experiment], now: datetime) -> datetime | None:
    """The soonest time a still-active resource expires: when the reconciler must look again."""
    times = [expires for experiment in experiments if (expires := experiment.expires()) is not None and expires > now]
    return min(times, default=None)


def pod_volume_name(pod_volumes: Sequence[Mapping[str, Any]], target_path: str, claim: str | None) -> str | None:
    """The pod's own name for the volume published at ``target_path`` (pod.spec.volumes[].name).

    Kubelet publishes a CSI volume at ``.../volumes/kubernetes.io~csi/<name>/mount``, where <name> is the pod's
    volume name for an inline volume and the PersistentVolume's name for a claim; a claim is matched by the
    PVC name the provisioner put in the volume context (``--extra-create-metadata``).
    """
    directory = target_path.rstrip("/").rsplit("/", 2)[-2] if target_path.rstrip("/").endswith("/mount") else None
    for volume in pod_volumes:
        if "csi" in volume and volume.get("name") == directory:
            return str(volume["name"])
        source = volume.get("persistentVolumeClaim") or {}
        if claim is not None and source.get("claimName") == claim:
            return str(volume["name"])
    return None
