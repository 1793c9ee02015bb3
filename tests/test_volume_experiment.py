"""VolumeExperiment's pure parts, in process: the generated CRD, selection, expiry, composition."""

from __future__ import annotations

import errno
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from interposer.csi import crd
from interposer.csi.attributes import LIVE_CONTROL, POD_NAME, POD_NAMESPACE, POD_UID
from interposer.csi.experiment import (
    Experiment,
    ExperimentSpec,
    compose,
    duration_seconds,
    next_expiry,
    pod_volume_name,
)
from interposer.mount.reconfigure import RUNTIME_SECTIONS

T0 = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)
OWN: dict[str, dict[str, Any]] = {"faults": {"rules": []}, "throttle": {"enabled": True}, "crash": {"enabled": False}}
EIO_RULE = {"rules": [{"action": {"errno": "EIO"}, "match": {"operations": ["read"]}}]}


def experiment(name: str, spec: dict[str, Any], created: datetime = T0, namespace: str = "team") -> Experiment:
    body = {
        "metadata": {
            "namespace": namespace,
            "name": name,
            "uid": f"uid-{name}",
            "generation": 1,
            "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": {"selector": {}, **spec},
    }
    return Experiment.from_object(body)


def spec_validator() -> jsonschema.Draft4Validator:
    """OpenAPI v3.0's keywords are Draft 4's (exclusiveMinimum a boolean); the API server adds nullable."""
    document = yaml.safe_load(crd.OUTPUT.read_text())
    return jsonschema.Draft4Validator(document["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_committed_crd_is_fresh() -> None:
    assert crd.OUTPUT.read_text() == crd.render(), f"{crd.OUTPUT} is stale: run ./tasks.sh generate"


def test_spec_sections_are_the_runtime_sections() -> None:
    """One source: the resource carries exactly what ctl set may change, with the config's own models."""
    from interposer.config import InterposerConfig

    for name in RUNTIME_SECTIONS:
        section = InterposerConfig.model_fields[name].annotation
        assert ExperimentSpec.model_fields[name].annotation == section | None  # type: ignore[operator]


def _walk(node: dict[str, Any], path: str, in_junctor: bool = False) -> list[str]:
    problems = []
    if "$ref" in node:
        problems.append(f"{path}: $ref")
    if in_junctor:
        problems += [f"{path}: {key} in a junctor" for key in ("type", "description", "nullable") if key in node]
    elif ("properties" in node or "items" in node) and node.get("type") not in ("object", "array"):
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties")
    for name, child in node.get("properties", {}).items():
        if not in_junctor and "type" not in child and not child.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}.{name}: no type")
        problems += _walk(child, f"{path}.{name}", in_junctor)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            problems += _walk(node[key], f"{path}[{key}]", in_junctor)
    for key in ("oneOf", "anyOf", "allOf"):
        for index, branch in enumerate(node.get(key, [])):
            problems += _walk(branch, f"{path}.{key}[{index}]", True)
            outside = set(node.get("properties", {}))
            problems += [f"{path}.{key}[{index}].{name}: not outside" for name in branch.get("properties", {})
                         if name not in outside]  # fmt: skip
    return problems


def test_schema_is_structural() -> None:
    """The API server's rules for a structural schema, checked here so the chart's CRD always installs."""
    assert _walk(crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "") == []


def test_schema_accepts_a_game_day() -> None:
    resource = {
        "apiVersion": "cnfs-interposer.io/v1alpha1",
        "kind": "VolumeExperiment",
        "metadata": {"name": "db-eio"},
        "spec": {
            "selector": {"matchLabels": {"app": "db"}},
            "volumeNames": ["data"],
            "faults": {
                "rules": [
                    {"match": {"operations": ["write"], "probability": 0.1}, "action": {"errno": "ENOSPC"}},
                    {"action": {"latency": {"kind": "pareto", "scale": 0.01, "shape": 1.5}}},
                ]
            },
            "throttle": {"write_bytes": {"rate": 1048576}},
            "duration": "10m",
        },
    }
    spec_validator().validate(resource)
    ExperimentSpec.model_validate(resource["spec"])


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"faults": {"rules": [{"match": {"probability": 2}, "action": {"errno": "EIO"}}]}}, "probability"),
        ({"faults": {"rules": [{"match": {"operations": ["reed"]}, "action": {"errno": "EIO"}}]}}, "operations"),
        ({"throttle": {"mode": "drop"}}, "mode"),
        ({"faults": {"rules": [{"action": {"latency": {"kind": "fixed", "seconds": -1}}}]}}, "seconds"),
        ({"faults": {"rules": [{"action": {"latency": {"kind": "normal", "mean": 1}}}]}}, "latency"),
        ({"crash": {"enabled": True}, "duration": "ten minutes"}, "duration"),
    ],
)
def test_schema_refuses_a_bad_field_by_name(spec: dict[str, Any], field: str) -> None:
    errors = list(spec_validator().iter_errors({"spec": {"selector": {}, **spec}}))
    assert errors, f"{spec} was accepted"
    named = " ".join(f"{'.'.join(map(str, error.absolute_path))} {error.message}" for error in errors)
    assert field in named, named


def test_rules_the_schema_cannot_say_are_the_models() -> None:
    bad = experiment("x", {"faults": {"rules": [{"action": {"errno": "EIO", "short": 0.5}}]}})
    assert bad.spec is None
    assert bad.invalid is not None
    assert "faults.rules.0.action" in bad.invalid
    assert "short" in bad.invalid
    assert experiment("y", {}).invalid is not None  # no section: the CRD's CEL rule says it too
    assert not bad.active(T0)


def test_duration_and_expiry() -> None:
    assert duration_seconds("1h30m") == 5400
    assert duration_seconds("1.5s") == 1.5
    assert duration_seconds("250ms") == 0.25
    short = experiment("short", {"crash": {"enabled": True}, "duration": "90s"})
    forever = experiment("forever", {"crash": {"enabled": True}})
    assert short.expires() == T0 + timedelta(seconds=90)
    assert short.active(T0 + timedelta(seconds=89))
    assert not short.active(T0 + timedelta(seconds=90))
    assert forever.expires() is None
    assert forever.active(T0 + timedelta(days=400))
    assert next_expiry([short, forever], T0) == T0 + timedelta(seconds=90)
    assert next_expiry([short, forever], T0 + timedelta(hours=1)) is None


def test_paused_is_not_active() -> None:
    assert not experiment("p", {"crash": {"enabled": True}, "paused": True}).active(T0)


def test_selection_is_by_namespace_labels_and_volume_name() -> None:
    selector = {
        "matchLabels": {"app": "db"},
        "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}],
    }
    one = experiment("one", {"selector": selector, "volumeNames": ["data"], "crash": {"enabled": True}})
    assert one.selects("team", {"app": "db"}, "data")
    assert not one.selects("other", {"app": "db"}, "data")  # its own namespace only
    assert not one.selects("team", {"app": "db", "tier": "x"}, "data")
    assert not one.selects("team", {"app": "web"}, "data")
    assert not one.selects("team", {"app": "db"}, "logs")
    every = experiment("all", {"selector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
                               "crash": {"enabled": True}})  # fmt: skip
    assert every.selects("team", {"app": "web"}, None)
    assert not every.selects("team", {}, None)


def test_composition_is_oldest_first_each_section_replaced_whole() -> None:
    older = experiment("b-older", {"faults": EIO_RULE, "throttle": {"mode": "fail"}}, created=T0)
    newer = experiment("a-newer", {"throttle": {"mode": "wait", "max_wait": 5}}, created=T0 + timedelta(seconds=1))
    same_time = experiment("c-same", {"crash": {"enabled": True}}, created=T0)
    result = compose(OWN, [newer, same_time, older])
    assert result.sections["faults"] == older.spec.sections()["faults"]  # type: ignore[union-attr]
    assert result.sections["throttle"]["max_wait"] == 5  # the newer one wins its section
    assert result.sections["crash"] == {"enabled": True}
    assert result.overridden(older) == {"throttle": "team/a-newer"}
    assert result.overridden(newer) == {}
    assert compose(OWN, []).sections == OWN  # nothing active: the volume's own


def test_pod_volume_name_for_inline_volumes_and_claims() -> None:
    volumes = [{"name": "scratch", "csi": {"driver": "csi.cnfs-interposer.io"}},
               {"name": "data", "persistentVolumeClaim": {"claimName": "db-data"}}]  # fmt: skip
    inline = "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/scratch/mount"
    claimed = "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/pvc-1234/mount"
    assert pod_volume_name(volumes, inline, None) == "scratch"
    assert pod_volume_name(volumes, claimed, "db-data") == "data"
    assert pod_volume_name(volumes, claimed, None) is None


def test_a_volume_opts_in_by_its_attributes_or_storage_class() -> None:
    from interposer.csi.attributes import parse
    from interposer.csi.errors import CsiError

    assert parse({"liveControl": "true"}, "volume_context").live_control
    assert not parse({}, "volume_context").live_control
    assert parse({"liveControl": "true"}, "parameters", allow_backing=False).live_control
    with pytest.raises(CsiError) as raised:
        parse({"liveControl": "maybe"}, "parameters", allow_backing=False)
    assert raised.value.message.startswith("parameters[liveControl]: 'maybe' is not a boolean")


def test_conditions_from_every_nodes_targets() -> None:
    from interposer.csi.live_control import conditions

    def by_type(result: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
        return {item["type"]: (item["status"], item["reason"]) for item in result}

    live = experiment("live", {"crash": {"enabled": True}, "duration": "1m"})
    applied = {"node": "a", "phase": "Applied", "generation": 1}
    now = T0 + timedelta(seconds=1)
    assert by_type(conditions(live, [applied], now, [])) == {
        "Invalid": ("False", "SpecValid"),
        "Expired": ("False", "Active"),
        "Selected": ("True", "VolumesSelected"),
        "Applied": ("True", "Applied"),
    }
    stale = {**applied, "node": "b", "generation": 0}
    assert by_type(conditions(live, [applied, stale], now, []))["Applied"] == ("False", "Pending")
    refused = {"node": "a", "phase": "Refused", "generation": 1}
    assert by_type(conditions(live, [refused], now, []))["Selected"] == ("False", "NoVolumes")
    later = T0 + timedelta(minutes=2)
    assert by_type(conditions(live, [applied], later, []))["Expired"] == ("True", "DurationPassed")
    assert by_type(conditions(live, [applied], later, []))["Applied"] == ("False", "Expired")
    paused = experiment("paused", {"crash": {"enabled": True}, "paused": True})
    assert by_type(conditions(paused, [], now, []))["Applied"] == ("False", "Paused")
    bad = experiment("bad", {"throttle": {"read_iops": {"rate": 1}, "mode": "wait", "max_wait": 0}})
    assert by_type(conditions(bad, [], now, []))["Invalid"] == ("True", "SpecRefused")
    first = conditions(live, [applied], now, [])
    again = conditions(live, [applied], later, first)
    assert again[0]["lastTransitionTime"] == first[0]["lastTransitionTime"]  # Invalid stayed False


class StubCluster:
    """What the reconciler asks of the API server, answered in process: one Pod, Events and status patches kept."""

    def __init__(self, labels: dict[str, str]) -> None:
        from kubernetes.client import V1Pod

        self.pod = V1Pod.from_dict(
            {
                "metadata": {"name": "db-0", "namespace": "team", "uid": "pod-uid", "labels": labels},
                "spec": {"containers": [{"name": "db"}], "volumes": [{"name": "data", "csi": {"driver": "d"}}]},
            }
        )
        self.events: list[tuple[str, str]] = []
        self.statuses: dict[str, dict[str, Any]] = {}

    def read_namespaced_pod(self, name: str, namespace: str, **_options: Any) -> Any:
        return self.pod

    def create_namespaced_event(self, namespace: str, body: Any, **_options: Any) -> None:
        self.events.append((body.involved_object.kind, body.reason))

    def patch_namespaced_custom_object_status(self, *arguments: Any, **_options: Any) -> None:
        self.statuses[arguments[4]] = arguments[5]["status"]


def test_reconcile_applies_composes_and_reverts_a_real_mount(mount_factory: Any, scratch: Path) -> None:
    """The reconciler on a real mount, the API server stubbed: apply, no-op, compose, override, expire, revert."""
    from types import SimpleNamespace

    from kubernetes.client import ApiClient

    from interposer.csi.live_control import LiveControl
    from interposer.csi.state import Publication
    from interposer.local.traces import load_spans
    from interposer.mount.control import request, socket_path_for
    from interposer.names import ATTR_RECONFIGURE_SECTIONS, ATTR_RECONFIGURE_SOURCE, SPAN_RECONFIGURE

    from .conftest import wait_for

    target = scratch / "pods" / "pod-uid" / "volumes" / "kubernetes.io~csi" / "data" / "mount"
    target.mkdir(parents=True)
    mount = mount_factory(mountpoint=target)
    (target / "table").write_bytes(b"rows")
    context = {POD_NAME: "db-0", POD_NAMESPACE: "team", POD_UID: "pod-uid", LIVE_CONTROL: "true"}
    publication = Publication(volume_id="v", target_path=str(target), backing=str(mount.backing), fresh=False,
                              volume_context=context, readonly=False, pid=1)  # fmt: skip
    node = SimpleNamespace(
        publications=[publication],
        node_id="node-a",
        roots=SimpleNamespace(state=scratch / "state"),
        supervisor=SimpleNamespace(launcher=SimpleNamespace(sockets=lambda path, key: (None, socket_path_for(path)))),
    )
    cluster = StubCluster({"app": "db"})
    control = LiveControl(node, ApiClient())  # type: ignore[arg-type]
    control.core = control.custom = cluster  # type: ignore[assignment]

    def body(name: str, spec: dict[str, Any], created: datetime) -> dict[str, Any]:
        metadata = {"namespace": "team", "name": name, "uid": f"uid-{name}", "generation": 1, "resourceVersion": "1",
                    "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip
        return {"metadata": metadata, "spec": {"selector": {"matchLabels": {"app": "db"}}, **spec}}

    def outcome() -> int:
        try:
            (target / "table").read_bytes()
        except OSError as exc:
            return exc.errno or -1
        return 0

    now = datetime.now(UTC).replace(microsecond=0)
    control.objects = {"a": body("older", {"faults": EIO_RULE, "duration": "60s"}, now)}
    assert control.reconcile(now) <= 60
    assert outcome() == errno.EIO
    assert cluster.events == [("Pod", "LiveControlApplied"), ("VolumeExperiment", "LiveControlApplied")]
    assert cluster.statuses["older"]["targets"]["db-0/data"]["phase"] == "Applied"
    span_file = Path(request(socket_path_for(target), {"command": "status"})["tracing"]["destination"])

    def reconfigured() -> list[Any]:
        spans = load_spans(span_file) if span_file.exists() else []
        return [span.attributes for span in spans if span.name == SPAN_RECONFIGURE]

    wait_for(lambda: bool(reconfigured()), what="the reconfiguration's span in the volume's traces")
    assert reconfigured()[0][ATTR_RECONFIGURE_SOURCE] == "VolumeExperiment team/older generation 1"
    assert list(reconfigured()[0][ATTR_RECONFIGURE_SECTIONS]) == ["crash", "faults", "throttle"]
    cluster.events.clear()
    control.reconcile(now)
    assert cluster.events == [], "the mount runs the sections already: nothing sent, nothing to tell"

    newer = {"faults": {"rules": [{"action": {"errno": "EACCES"}}]}, "throttle": {"read_iops": {"rate": 1000}}}
    control.objects["b"] = body("newer", {**newer, "duration": "30s"}, now + timedelta(seconds=1))
    control.reconcile(now + timedelta(seconds=1))
    assert outcome() == errno.EACCES
    assert cluster.statuses["older"]["targets"]["db-0/data"]["overriddenBy"] == {"faults": "team/newer"}
    running = request(socket_path_for(target), {"command": "status"})["config"]
    assert running["throttle"]["read_iops"] == {"rate": 1000.0, "burst": None}

    assert control.reconcile(now + timedelta(seconds=40)) <= 21  # newer expired: older's rules are back
    assert outcome() == errno.EIO
    cluster.events.clear()
    control.reconcile(now + timedelta(seconds=61))
    assert outcome() == 0
    assert ("Pod", "LiveControlReverted") in cluster.events
    assert list(control.overrides) == []

    request(socket_path_for(target), {"command": "configure", "sections": {"faults": EIO_RULE}})
    control.reconcile(now + timedelta(seconds=62))
    assert outcome() == errno.EIO, "a change made by hand with ctl set, selected by nothing, is left alone"
