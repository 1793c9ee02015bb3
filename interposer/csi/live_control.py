"""Live control: the node plugin applies VolumeExperiments to the volumes it has published.

One thread keeps a copy of every VolumeExperiment in the cluster with the official client's list and watch,
resumed where it stopped after an error (its resourceVersion) and listed afresh when the API server has
forgotten that version (410 Gone) or the plugin restarts.  Another reconciles, whenever that copy changes, a
volume is published, or a resource's duration ends (it sleeps until the soonest one, so expiry is on time):

- for each published volume whose pod carries kubelet's pod attributes, the resources of the pod's namespace
  that select it and are active (valid, not paused, not expired) compose into the volume's runtime sections
  (``experiment.compose``); a volume that does not opt in (``liveControl``) is never touched;
- the sections go to the volume's server through its control socket, the very request ``interposer ctl set``
  sends, and only when they differ from what the mount runs: a reconcile that changes nothing resets no
  fault counters or token buckets;
- a volume the plugin has changed is recorded on disk (``live-control/``) until it is given back its own
  sections, so a plugin restarted after a resource was deleted or expired still reverts the volume, and a
  volume changed by hand with ``ctl set`` and selected by nothing is left as it is;
- every change is an Event on the Pod and on the resource, a count in ``cnfs_csi_live_control_changes_total``,
  and a line in the volume server's log naming the resource; the status of each resource lists its targets on
  this node and its conditions (``patch_status``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..config import load_config
from ..mount.control import request
from ..mount.reconfigure import RUNTIME_SECTIONS
from .attributes import POD_NAME, POD_NAMESPACE, POD_UID, parse
from .errors import CsiError
from .experiment import (
    API_VERSION,
    CONDITION_APPLIED,
    CONDITION_EXPIRED,
    CONDITION_INVALID,
    CONDITION_SELECTED,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    Experiment,
    compose,
    next_expiry,
    pod_volume_name,
)
from .metrics import live_control_changes
from .node import NodeService
from .state import Publication, RecordStore, key_of

log = logging.getLogger(__name__)

PVC_NAME = "csi.storage.k8s.io/pvc/name"
"""What csi-provisioner's --extra-create-metadata puts in the parameters, and so in the volume context."""
COMPONENT = "cnfs-interposer-node"
RESYNC_SECONDS = 30.0
"""Longest between two reconciles: a pod's labels changed, or a volume published before its pod was known."""
WATCH_SECONDS = 300
RETRY_SECONDS = 2.0
RECORDED_EVENTS = 4096
"""Objects whose last Event the plugin remembers, to count a repeat on it rather than add another."""
CONTROL_TIMEOUT = 5.0
REQUEST_TIMEOUT = 10.0
"""Seconds any API request may take: the client has no limit of its own, and a hung call would stall live control."""

PHASE_APPLIED = "Applied"
PHASE_REVERTED = "Reverted"
PHASE_REFUSED = "Refused"
PHASE_FAILED = "Failed"


class Override(BaseModel):
    """A volume whose sections the plugin has changed, and by which resources (uid → namespace/name)."""

    target_path: str
    experiments: dict[str, str]


@dataclass
class Target:
    """One targeted volume on this node, as it goes into a resource's ``status.targets``."""

    pod: str
    volume: str
    volume_id: str
    phase: str
    generation: int
    sections: list[str] = field(default_factory=list)
    overridden_by: dict[str, str] = field(default_factory=dict)
    message: str = ""

    def body(self, node: str, last_change: str) -> dict[str, Any]:
        return {
            "pod": self.pod,
            "volume": self.volume,
            "volumeId": self.volume_id,
            "node": node,
            "phase": self.phase,
            "generation": self.generation,
            "sections": self.sections,
            "overriddenBy": self.overridden_by,
            "message": self.message,
            "lastChange": last_change,
        }


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def own_sections(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A volume's runtime sections from its own attributes, as the mount reports them."""
    validated = load_config(None, config)
    return {name: getattr(validated, name).model_dump(mode="json") for name in RUNTIME_SECTIONS}


def conditions(
    experiment: Experiment, targets: Sequence[Mapping[str, Any]], now: datetime, previous: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The four conditions from the whole status (every node's targets); a condition whose status did not
    change keeps its lastTransitionTime."""
    expires = experiment.expires()
    selected = [target for target in targets if target.get("phase") != PHASE_REFUSED]
    refused = len(targets) - len(selected)
    nodes = {target.get("node") for target in selected}
    pending = [
        target
        for target in selected
        if target.get("phase") != PHASE_APPLIED or target.get("generation") != experiment.generation
    ]
    failed = [target for target in selected if target.get("phase") == PHASE_FAILED]
    values: dict[str, tuple[bool, str, str]] = {
        CONDITION_INVALID: (True, "SpecRefused", experiment.invalid)
        if experiment.invalid
        else (False, "SpecValid", "the spec is valid"),
        CONDITION_EXPIRED: (True, "DurationPassed", f"expired at {_timestamp(expires)}")
        if expires is not None and experiment.expired(now)
        else (False, "Active", f"expires at {_timestamp(expires)}" if expires else "no duration: until deleted"),
        CONDITION_SELECTED: (True, "VolumesSelected", f"{len(selected)} volume(s) on {len(nodes)} node(s)")
        if selected
        else (
            False,
            "NoVolumes",
            f"{refused} selected volume(s) do not opt in (liveControl)" if refused else "no opted-in volume selected",
        ),
    }
    if not experiment.active(now):
        paused = experiment.spec is not None and experiment.spec.paused
        reason = "Invalid" if experiment.invalid else "Expired" if experiment.expired(now) else "Paused"
        applied = (False, reason, "the targeted volumes run with their own sections" if paused else reason.lower())
    elif not selected:
        applied = (False, "NoVolumes", "nothing to apply")
    elif failed:
        applied = (False, "Failed", "; ".join(str(target.get("message")) for target in failed))
    elif pending:
        applied = (False, "Pending", f"{len(pending)} of {len(selected)} volume(s) not at generation "
                   f"{experiment.generation} yet")  # fmt: skip
    else:
        applied = (True, "Applied", f"generation {experiment.generation} on {len(selected)} volume(s)")
    values[CONDITION_APPLIED] = applied
    before = {condition.get("type"): condition for condition in previous}
    result = []
    for kind, (status, reason, message) in values.items():
        text = "True" if status else "False"
        old = before.get(kind, {})
        result.append(
            {
                "type": kind,
                "status": text,
                "reason": reason,
                "message": message,
                "observedGeneration": experiment.generation,
                "lastTransitionTime": old.get("lastTransitionTime", _timestamp(now))
                if old.get("status") == text
                else _timestamp(now),
            }
        )
    return result


def _without_times(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{key: value for key, value in item.items() if key != "lastTransitionTime"} for item in items]


class LiveControl:
    """The watch and the reconciler of one node plugin."""

    def __init__(self, node: NodeService, api_client: Any) -> None:
        from kubernetes import client

        self.node = node
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.serialize = api_client.sanitize_for_serialization
        self.overrides = RecordStore(node.roots.state / "live-control", Override)
        self.objects: dict[str, dict[str, Any]] = {}
        self.listed = threading.Event()
        self.changed = threading.Event()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.failures = 0
        """Volumes the last reconcile could not bring to their sections."""
        self.recorded: dict[tuple[str, str], tuple[str, str, str, int]] = {}
        """The last Event recorded per (namespace, object uid): its reason, message, name and count.  The same
        Event again (a volume failing at every retry) counts up on that Event, as the kubelet's recorder does,
        instead of adding one Event per retry.  At most ``RECORDED_EVENTS`` objects, the oldest forgotten."""

    def start(self) -> None:
        for target, name in ((self._watch, "live-control-watch"), (self._reconcile_loop, "live-control")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        self.changed.set()

    def wake(self) -> None:
        """Reconcile now: a resource or a publication changed."""
        self.changed.set()

    # The copy of the resources.

    def _watch(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        version: str | None = None
        while not self.stopping.is_set():
            try:
                if version is None:
                    listing: Any = self.custom.list_cluster_custom_object(
                        GROUP, VERSION, PLURAL, _request_timeout=REQUEST_TIMEOUT
                    )
                    with self.lock:
                        self.objects = {item["metadata"]["uid"]: item for item in listing["items"]}
                    version = listing["metadata"]["resourceVersion"]
                    self.listed.set()
                    self.wake()
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self.custom.list_cluster_custom_object,
                    GROUP,
                    VERSION,
                    PLURAL,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_SECONDS,
                    _request_timeout=WATCH_SECONDS + REQUEST_TIMEOUT,
                )
                for event in stream:
                    if event is None:
                        continue  # a blank line of the stream (the client yields it as None)
                    body = event["raw_object"]
                    version = body["metadata"]["resourceVersion"]
                    if event["type"] == "BOOKMARK":
                        continue
                    with self.lock:
                        if event["type"] == "DELETED":
                            self.objects.pop(body["metadata"]["uid"], None)
                        else:
                            self.objects[body["metadata"]["uid"]] = body
                    self.wake()
                    if self.stopping.is_set():
                        return
            except ApiException as exc:
                if exc.status == 410:
                    log.info("live control: resource version %s is gone; listing again", version)
                    version = None
                    continue
                log.warning("live control: watching %s failed: %s %s; retrying", PLURAL, exc.status, exc.reason)
                self.stopping.wait(RETRY_SECONDS)
            except Exception as exc:  # the API server restarting, a connection reset: watch again from `version`
                log.warning("live control: watching %s failed: %s; retrying", PLURAL, exc)
                self.stopping.wait(RETRY_SECONDS)

    # Reconciling.

    def _reconcile_loop(self) -> None:
        self.listed.wait()
        timeout = 0.0
        while not self.stopping.is_set():
            self.changed.wait(timeout)
            self.changed.clear()
            if self.stopping.is_set():
                return
            try:
                timeout = self.reconcile(_now())
            except Exception:
                log.exception("live control: reconcile failed; retrying")
                timeout = RETRY_SECONDS

    def reconcile(self, now: datetime) -> float:
        """Bring every published volume to what the resources ask; return the seconds until the next look."""
        with self.lock:
            bodies = dict(self.objects)
        log.debug("live control: reconciling %d resources", len(bodies))
        self.failures = 0
        parsed = [(Experiment.from_object(body), body) for body in bodies.values()]
        experiments = [experiment for experiment, _ in parsed]
        mine: dict[str, dict[str, Target]] = {experiment.uid: {} for experiment in experiments}
        pods: dict[tuple[str, str], dict[str, Any] | None] = {}
        published = set()
        for publication in self.node.publications:
            published.add(publication.target_path)
            if publication.pid is None and publication.pod is None:
                continue  # being published: its server is not serving yet (on_publish wakes us when it is)
            self._reconcile_volume(publication, experiments, mine, pods, now)
        for override in self.overrides:
            if override.target_path not in published:
                self.overrides.delete(override.target_path)  # unpublished: its server is gone with its sections
        for experiment, body in parsed:
            self._patch_status(experiment, body, mine[experiment.uid], now)
        soonest = next_expiry(experiments, now)
        wait = RETRY_SECONDS if self.failures else RESYNC_SECONDS  # a volume that failed is tried again soon
        if soonest is None:
            return wait
        return min(wait, max((soonest - now).total_seconds(), 0.0))

    def _pod(self, namespace: str, name: str, cache: dict[tuple[str, str], dict[str, Any] | None]) -> Any:
        from kubernetes.client.exceptions import ApiException

        if (namespace, name) not in cache:
            try:
                cache[namespace, name] = self.serialize(
                    self.core.read_namespaced_pod(name, namespace, _request_timeout=REQUEST_TIMEOUT)
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
                cache[namespace, name] = None
        return cache[namespace, name]

    def _reconcile_volume(
        self,
        publication: Publication,
        experiments: list[Experiment],
        mine: dict[str, dict[str, Target]],
        pods: dict[tuple[str, str], dict[str, Any] | None],
        now: datetime,
    ) -> None:
        context = publication.volume_context
        namespace, pod_name = context.get(POD_NAMESPACE), context.get(POD_NAME)
        record = self.overrides.get(publication.target_path)
        if namespace is None or pod_name is None:
            return  # no podInfoOnMount: no pod to select by
        candidates = [experiment for experiment in experiments if experiment.namespace == namespace]
        if not candidates and record is None:
            return
        pod = self._pod(namespace, pod_name, pods)
        if pod is None or pod["metadata"].get("uid") != context.get(POD_UID):
            return  # the pod is gone or another pod has its name: its volume is on its way out
        labels = pod["metadata"].get("labels") or {}
        volume = pod_volume_name(pod["spec"].get("volumes") or [], publication.target_path, context.get(PVC_NAME))
        selecting = [experiment for experiment in candidates if experiment.selects(namespace, labels, volume)]
        try:
            attributes = parse(context, "volume_context")
        except CsiError:
            return  # published before the allow-list changed: not this module's to judge
        shown = volume or Path(publication.target_path).parent.name

        def target(experiment: Experiment, phase: str, message: str = "", **extra: Any) -> None:
            mine[experiment.uid][f"{pod_name}/{shown}"] = Target(
                pod_name, shown, publication.volume_id, phase, experiment.generation, message=message, **extra
            )

        if not attributes.live_control:
            for experiment in selecting:
                target(experiment, PHASE_REFUSED, 'the volume does not opt in: liveControl is not "true"')
            return
        active = [experiment for experiment in selecting if experiment.active(now)]
        if not active and record is None:
            for experiment in selecting:
                target(experiment, PHASE_REVERTED, "inactive: the volume runs with its own sections")
            return
        composition = compose(own_sections(attributes.config), active)
        source = ", ".join(f"{KIND} {experiment.ref} generation {experiment.generation}" for experiment in active)
        changed, error = self._configure(publication, composition.sections, source or "its own volume attributes")
        if error is None and active:
            self.overrides.put(
                publication.target_path,
                Override(
                    target_path=publication.target_path,
                    experiments={experiment.uid: experiment.ref for experiment in active},
                ),
            )
        elif error is None:
            self.overrides.delete(publication.target_path)
        for experiment in selecting:
            if experiment not in active:
                target(experiment, PHASE_REVERTED, "inactive: the volume runs with its own sections")
            elif error is not None:
                target(experiment, PHASE_FAILED, error)
            else:
                sections = [name for name, origin in composition.sources.items() if origin.uid == experiment.uid]
                target(experiment, PHASE_APPLIED, sections=sections, overridden_by=composition.overridden(experiment))
        if changed or error is not None:
            self._changed_volume(pod, shown, record, active, error)

    def _configure(
        self, publication: Publication, sections: dict[str, dict[str, Any]], source: str
    ) -> tuple[bool, str | None]:
        """Send the sections if the mount runs others: whether it changed, and why it could not."""
        key = key_of(publication.target_path)
        control = self.node.supervisor.launcher.sockets(Path(publication.target_path), key)[1]
        try:
            status = request(control, {"command": "status"}, timeout=CONTROL_TIMEOUT)
            running = status.get("config", {})
            if all(running.get(name) == section for name, section in sections.items()):
                return False, None
            reply = request(
                control, {"command": "configure", "sections": sections, "source": source}, timeout=CONTROL_TIMEOUT
            )
        except (OSError, ValueError) as exc:
            return False, f"the volume's server does not answer: {exc}"
        if not reply.get("ok"):
            return False, f"the volume's server refused the sections: {reply.get('error')}"
        log.info("live control: volume %s at %s: sections set by %s", publication.volume_id, key, source)
        return True, None

    def _changed_volume(
        self,
        pod: Mapping[str, Any],
        volume: str,
        record: Override | None,
        active: list[Experiment],
        error: str | None,
    ) -> None:
        """The Events and the count of one volume's change, or of its failure."""
        action = "apply" if active else "revert"
        live_control_changes.labels(action, "failed" if error else "ok").inc()
        involved = [(experiment.namespace, experiment.name, experiment.uid) for experiment in active]
        if not active and record is not None:
            involved = [(*ref.split("/", 1), uid) for uid, ref in record.experiments.items()]  # type: ignore[misc]
        if error is not None:
            reason, kind, message = "LiveControlFailed", "Warning", f"volume {volume}: {error}"
            log.warning("live control: %s", message)
            self.failures += 1
        elif active:
            refs = ", ".join(experiment.ref for experiment in active)
            reason, kind, message = "LiveControlApplied", "Normal", f"volume {volume}: sections set by {refs}"
        else:
            reason, kind, message = "LiveControlReverted", "Normal", f"volume {volume}: back to its own sections"
        metadata = pod["metadata"]
        self._event(metadata["namespace"], ("v1", "Pod", metadata["name"], metadata["uid"]), reason, kind, message)
        for namespace, name, uid in involved:
            self._event(namespace, (API_VERSION, KIND, name, uid), reason, kind, message)

    def _event(self, namespace: str, involved: tuple[str, str, str, str], reason: str, kind: str, text: str) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        api_version, object_kind, name, uid = involved
        now = _timestamp(_now())
        key = (namespace, uid)
        last = self.recorded.pop(key, None)
        if last is not None and last[:2] == (reason, text):
            _, _, event_name, count = last
            try:
                self.core.patch_namespaced_event(
                    event_name,
                    namespace,
                    {"count": count + 1, "lastTimestamp": now},
                    _request_timeout=REQUEST_TIMEOUT,
                )
                self.recorded[key] = (reason, text, event_name, count + 1)
                return
            except ApiException as exc:
                if exc.status != 404:  # gone (Events expire after an hour): recorded anew below
                    self.recorded[key] = last
                    log.warning(
                        "live control: cannot count event %s on %s %s: %s", reason, object_kind, name, exc.reason
                    )
                    return
        event_name = f"{name}.{time.time_ns():x}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": event_name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": api_version,
                "kind": object_kind,
                "name": name,
                "namespace": namespace,
                "uid": uid,
            },
            "reason": reason,
            "message": text,
            "type": kind,
            "source": {"component": COMPONENT, "host": self.node.node_id},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.node.node_id,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            event = client.CoreV1Event.from_dict(body)
            assert event is not None, "a body was given"
            self.core.create_namespaced_event(namespace, event, _request_timeout=REQUEST_TIMEOUT)
            self.recorded[key] = (reason, text, event_name, 1)
            while len(self.recorded) > RECORDED_EVENTS:
                del self.recorded[next(iter(self.recorded))]
        except ApiException as exc:
            log.warning("live control: cannot record event %s on %s %s: %s", reason, object_kind, name, exc.reason)

    def _patch_status(
        self, experiment: Experiment, body: Mapping[str, Any], targets: dict[str, Target], now: datetime
    ) -> None:
        """Write this node's targets and the conditions, if they changed; a stale resourceVersion is refused by
        the API server (409) and the watch brings the newer object, which is reconciled again."""
        from kubernetes.client.exceptions import ApiException

        status = body.get("status") or {}
        before: dict[str, Any] = status.get("targets") or {}
        node = self.node.node_id
        changes: dict[str, Any] = {key: None for key, old in before.items() if old.get("node") == node}
        for key, target in targets.items():
            old = before.get(key) or {}
            fresh = target.body(node, _timestamp(now))
            if {**old, "lastChange": None} == {**fresh, "lastChange": None}:
                changes.pop(key, None)
                continue
            changes[key] = fresh
        merged = {key: value for key, value in {**before, **changes}.items() if value is not None}
        previous = status.get("conditions") or []
        fresh_conditions = conditions(experiment, list(merged.values()), now, previous)
        if not changes and _without_times(fresh_conditions) == _without_times(previous):
            return
        patch = {
            "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
            "status": {"targets": changes, "conditions": fresh_conditions},
        }
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                experiment.namespace,
                PLURAL,
                experiment.name,
                patch,
                _content_type="application/merge-patch+json",
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning(
                    "live control: cannot patch the status of %s: %s %s", experiment.ref, exc.status, exc.reason
                )


def client_for(kubeconfig: Path | None) -> Any | None:
    """The official client's ApiClient: from ``kubeconfig``, else in-cluster; None when neither is there."""
    import os

    from kubernetes import client, config

    if kubeconfig is not None:
        return config.new_client_from_config(str(kubeconfig))  # type: ignore[no-untyped-call]
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


def start(node: NodeService, kubeconfig: Path | None) -> LiveControl | None:
    """Watch VolumeExperiments for the node's volumes; without a Kubernetes API there are none to watch."""
    api_client = client_for(kubeconfig)
    if api_client is None:
        log.info("live control off: no Kubernetes API (not in a cluster, no --kubeconfig)")
        return None
    control = LiveControl(node, api_client)
    node.on_publish = control.wake
    control.start()
    log.info("live control: watching %s for the volumes of node %s", PLURAL, node.node_id)
    return control
