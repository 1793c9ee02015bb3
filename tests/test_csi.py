"""The CSI driver over real gRPC on a unix socket, publishing real FUSE mounts."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from pydantic import BaseModel

from interposer.config import InterposerConfig
from interposer.csi import csi_pb2
from interposer.csi.attributes import ALLOWED, EPHEMERAL, POD_NAME, POD_NAMESPACE, POD_UID, VOLUME_FIELDS, parse
from interposer.csi.errors import CsiError
from interposer.mount.table import mount_at
from interposer.names import CSI_DRIVER_NAME

from .conftest import require_fuse, wait_for
from .csi_plugin import CsiPlugin

MODE = csi_pb2.VolumeCapability.AccessMode
MOUNT = csi_pb2.VolumeCapability(
    mount=csi_pb2.VolumeCapability.MountVolume(), access_mode=MODE(mode=MODE.SINGLE_NODE_WRITER)
)
CAP_SYS_ADMIN = 21  # linux/capability.h
POD = {POD_NAME: "web-0", POD_NAMESPACE: "shop", POD_UID: "7c1e", EPHEMERAL: "true"}


@pytest.fixture
def plugin(scratch: Path) -> Iterator[CsiPlugin]:
    require_fuse()
    with CsiPlugin(scratch) as running:
        yield running


def target_in(plugin: CsiPlugin, name: str) -> Path:
    return plugin.kubelet / "pods" / "7c1e" / "volumes" / "kubernetes.io~csi" / name / "mount"


def publish(plugin: CsiPlugin, volume_id: str, target: Path, context: dict[str, str], **fields: object) -> None:
    request = csi_pb2.NodePublishVolumeRequest(
        volume_id=volume_id, target_path=str(target), volume_capability=MOUNT, volume_context=context
    )
    for name, value in fields.items():
        setattr(request, name, value)
    plugin.call("Node", "NodePublishVolume", request)


def unpublish(plugin: CsiPlugin, volume_id: str, target: Path) -> None:
    request = csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target))
    plugin.call("Node", "NodeUnpublishVolume", request)


def stats(plugin: CsiPlugin, volume_id: str, target: Path) -> csi_pb2.NodeGetVolumeStatsResponse:
    request = csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=str(target))
    response: csi_pb2.NodeGetVolumeStatsResponse = plugin.call("Node", "NodeGetVolumeStats", request)
    return response


def test_identity_names_the_driver_and_its_services(plugin: CsiPlugin) -> None:
    info = plugin.call("Identity", "GetPluginInfo", csi_pb2.GetPluginInfoRequest())
    assert info.name == CSI_DRIVER_NAME
    assert info.vendor_version
    capabilities = plugin.call("Identity", "GetPluginCapabilities", csi_pb2.GetPluginCapabilitiesRequest())
    assert [c.service.type for c in capabilities.capabilities] == [csi_pb2.PluginCapability.Service.CONTROLLER_SERVICE]
    assert plugin.call("Identity", "Probe", csi_pb2.ProbeRequest()).ready.value is True
    assert plugin.call("Node", "NodeGetInfo", csi_pb2.NodeGetInfoRequest()).node_id == "node-a"
    node = plugin.call("Node", "NodeGetCapabilities", csi_pb2.NodeGetCapabilitiesRequest())
    rpc = csi_pb2.NodeServiceCapability.RPC
    assert {c.rpc.type for c in node.capabilities} == {rpc.GET_VOLUME_STATS, rpc.VOLUME_CONDITION}


def test_inline_volume_on_a_host_directory_round_trip(plugin: CsiPlugin) -> None:
    backing = plugin.host / "data" / "web"
    backing.mkdir(parents=True)
    target = target_in(plugin, "vol")
    context = {**POD, "backingDir": "data/web", "tracing.exporter": "file", "tracing.export_delay": "0.1"}
    publish(plugin, "csi-abc", target, context)
    entry = mount_at(target)
    assert entry is not None
    assert entry.fstype == "fuse.interposer"
    (target / "written-by-pod").write_text("through the mount")
    assert (backing / "written-by-pod").read_text() == "through the mount"

    [publication] = plugin.publications()
    span_file = plugin.interposer_files(publication)[2]
    wait_for(lambda: span_file.exists() and "web-0" in span_file.read_text(), what="spans with the pod's resource")
    resource = json.loads(span_file.read_text().splitlines()[0])["resourceSpans"][0]["resource"]["attributes"]
    attributes = {item["key"]: next(iter(item["value"].values())) for item in resource}
    assert attributes["k8s.pod.name"] == "web-0"
    assert attributes["k8s.namespace.name"] == "shop"
    assert attributes["k8s.pod.uid"] == "7c1e"
    assert attributes["fuse.volume.id"] == "csi-abc"

    status = dict(line.split(":\t") for line in Path(f"/proc/{publication.pid}/status").read_text().splitlines())
    assert not int(status["CapEff"], 16) & 1 << CAP_SYS_ADMIN, "a server handed a mounted descriptor needs no SYS_ADMIN"
    assert not int(status["CapBnd"], 16) & 1 << CAP_SYS_ADMIN, "and cannot get it back"

    usage = stats(plugin, "csi-abc", target)
    assert not usage.volume_condition.abnormal
    assert {u.unit for u in usage.usage} == {csi_pb2.VolumeUsage.BYTES, csi_pb2.VolumeUsage.INODES}
    assert all(u.total > 0 for u in usage.usage)

    pid = publication.pid
    assert pid is not None
    unpublish(plugin, "csi-abc", target)
    assert mount_at(target) is None
    assert not target.exists()
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert (backing / "written-by-pod").read_text() == "through the mount", "a host directory outlives its volume"
    assert plugin.publications() == []
    assert not span_file.exists()


def test_fresh_volume_lives_and_dies_with_its_publication(plugin: CsiPlugin) -> None:
    target = target_in(plugin, "scratch")
    publish(plugin, "csi-fresh", target, POD)
    (target / "f").write_text("x")
    [publication] = plugin.publications()
    backing = Path(publication.backing)
    assert backing.is_relative_to(plugin.state)
    assert (backing / "f").read_text() == "x"
    unpublish(plugin, "csi-fresh", target)
    assert not backing.exists()


def test_every_rpc_is_idempotent(plugin: CsiPlugin) -> None:
    target = target_in(plugin, "twice")
    publish(plugin, "csi-twice", target, POD)
    [first] = plugin.publications()
    publish(plugin, "csi-twice", target, POD)
    [second] = plugin.publications()
    assert second.pid == first.pid, "a repeated publish must not start a second interposer"
    unpublish(plugin, "csi-twice", target)
    unpublish(plugin, "csi-twice", target)
    assert mount_at(target) is None
    assert plugin.publications() == []

    parameters = {"cache.direct_io": "true"}
    create = csi_pb2.CreateVolumeRequest(name="pvc-1", volume_capabilities=[MOUNT], parameters=parameters)
    one = plugin.call("Controller", "CreateVolume", create).volume
    two = plugin.call("Controller", "CreateVolume", create).volume
    assert one == two
    assert (plugin.volumes / one.volume_id).is_dir()
    delete = csi_pb2.DeleteVolumeRequest(volume_id=one.volume_id)
    plugin.call("Controller", "DeleteVolume", delete)
    plugin.call("Controller", "DeleteVolume", delete)
    assert not (plugin.volumes / one.volume_id).exists()


def test_persistent_volume_from_create_to_delete(plugin: CsiPlugin) -> None:
    capabilities = plugin.call("Controller", "ControllerGetCapabilities", csi_pb2.ControllerGetCapabilitiesRequest())
    assert [c.rpc.type for c in capabilities.capabilities] == [
        csi_pb2.ControllerServiceCapability.RPC.CREATE_DELETE_VOLUME
    ]
    create = csi_pb2.CreateVolumeRequest(
        name="pvc-42",
        volume_capabilities=[MOUNT],
        parameters={"throttle.write_iops.rate": "1000"},
        capacity_range=csi_pb2.CapacityRange(required_bytes=1 << 30),
    )
    volume = plugin.call("Controller", "CreateVolume", create).volume
    assert volume.capacity_bytes == 1 << 30
    assert volume.volume_context["throttle.write_iops.rate"] == "1000"
    validate = csi_pb2.ValidateVolumeCapabilitiesRequest(volume_id=volume.volume_id, volume_capabilities=[MOUNT])
    assert plugin.call("Controller", "ValidateVolumeCapabilities", validate).confirmed.volume_capabilities

    target = target_in(plugin, "pv")
    context = {**volume.volume_context, POD_NAME: "db-0", POD_NAMESPACE: "shop", POD_UID: "7c1e"}
    publish(plugin, volume.volume_id, target, context)
    (target / "table").write_text("rows")
    assert (plugin.volumes / volume.volume_id / "table").read_text() == "rows"
    [publication] = plugin.publications()
    assert publication.pid is not None
    config = plugin.interposer_files(publication)[0].read_text()
    assert "rate: 1000" in config
    unpublish(plugin, volume.volume_id, target)
    assert (plugin.volumes / volume.volume_id / "table").read_text() == "rows", "a persistent volume keeps its data"
    plugin.call("Controller", "DeleteVolume", csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id))
    assert not (plugin.volumes / volume.volume_id).exists()


def test_readonly_publish_refuses_writes(plugin: CsiPlugin) -> None:
    (plugin.host / "ro").mkdir()
    (plugin.host / "ro" / "kept").write_text("old")
    target = target_in(plugin, "ro")
    publish(plugin, "csi-ro", target, {**POD, "backingDir": "ro"}, readonly=True)
    assert (target / "kept").read_text() == "old"
    with pytest.raises(OSError) as raised:
        (target / "kept").write_text("new")
    assert raised.value.errno == 30  # EROFS
    unpublish(plugin, "csi-ro", target)


def test_restarted_plugin_keeps_its_volumes_and_reports_a_dead_interposer(plugin: CsiPlugin) -> None:
    target = target_in(plugin, "survivor")
    publish(plugin, "csi-live", target, POD)
    [publication] = plugin.publications()
    assert plugin.stop() == 0
    assert mount_at(target) is not None, "stopping the plugin must leave volumes mounted"
    plugin.start()
    assert not stats(plugin, "csi-live", target).volume_condition.abnormal
    publish(plugin, "csi-live", target, POD)
    assert plugin.publications()[0].pid == publication.pid, "the restarted plugin adopts the running interposer"

    assert publication.pid is not None
    os.kill(publication.pid, signal.SIGKILL)
    wait_for(lambda: stats(plugin, "csi-live", target).volume_condition.abnormal, what="an abnormal condition")
    assert "gone" in stats(plugin, "csi-live", target).volume_condition.message

    publish(plugin, "csi-live", target, POD)
    [restarted] = plugin.publications()
    assert restarted.pid != publication.pid
    (target / "after-recovery").write_text("ok")
    assert not stats(plugin, "csi-live", target).volume_condition.abnormal
    unpublish(plugin, "csi-live", target)
    assert mount_at(target) is None


def expect_error(plugin: CsiPlugin, service: str, method: str, request: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.RpcError) as raised:
        plugin.call(service, method, request)  # type: ignore[arg-type]
    error = raised.value
    assert error.code() == code, error.details()
    return str(error.details())


def test_bad_requests_get_their_codes_and_name_the_field(plugin: CsiPlugin) -> None:
    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    target = str(target_in(plugin, "bad"))
    publish_request = csi_pb2.NodePublishVolumeRequest
    cases: list[tuple[str, str, object, grpc.StatusCode, str]] = [
        ("Node", "NodePublishVolume", publish_request(target_path=target, volume_capability=MOUNT), invalid,
         "volume_id is required"),
        ("Node", "NodePublishVolume", publish_request(volume_id="v", volume_capability=MOUNT), invalid,
         "target_path is required"),
        ("Node", "NodePublishVolume", publish_request(volume_id="v", target_path=target), invalid,
         "volume_capability is required"),
        ("Node", "NodePublishVolume", publish_request(
            volume_id="v", target_path=target, volume_context=POD,
            volume_capability=csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume(),
                                                       access_mode=MODE(mode=MODE.SINGLE_NODE_WRITER))),
         invalid, "block access is not supported"),
        ("Node", "NodePublishVolume", publish_request(
            volume_id="v", target_path="/etc/evil", volume_capability=MOUNT, volume_context=POD),
         invalid, "target_path '/etc/evil' is outside"),
        ("Node", "NodePublishVolume", publish_request(
            volume_id="v", target_path=str(plugin.kubelet / "pods" / ".." / ".." / "x"), volume_capability=MOUNT),
         invalid, "must not contain '..'"),
        ("Node", "NodePublishVolume", publish_request(
            volume_id="v", target_path=target, volume_capability=MOUNT, volume_context={**POD, "backingDir": "../x"}),
         invalid, "volume_context[backingDir] '../x' must not contain '..'"),
        ("Node", "NodePublishVolume", publish_request(
            volume_id="v", target_path=target, volume_capability=MOUNT, volume_context={**POD, "backingDir": "link"}),
         invalid, "volume_context[backingDir] 'link' is outside"),
        ("Node", "NodePublishVolume", publish_request(
            volume_id="v", target_path=target, volume_capability=MOUNT,
            volume_context={**POD, "throttle.read_iops.rate": "-5"}),
         invalid, "throttle.read_iops"),
        ("Node", "NodePublishVolume", publish_request(
            volume_id="v", target_path=target, volume_capability=MOUNT, volume_context={**POD, "colour": "red"}),
         invalid, "volume_context[colour]: unknown attribute; allowed: backingDir, config, liveControl, cache"),
        ("Node", "NodePublishVolume", publish_request(
            volume_id="v", target_path=target, volume_capability=MOUNT, volume_context={**POD, "liveControl": "maybe"}),
         invalid, "volume_context[liveControl]: 'maybe' is not a boolean; allowed: \"true\" or \"false\""),
        ("Node", "NodePublishVolume", publish_request(
            volume_id="v", target_path=target, volume_capability=MOUNT,
            volume_context={**POD, "extra_layers": "[os:system]"}),
         invalid, f"volume_context[extra_layers]: not settable by a volume (the driver's); allowed: {ALLOWED}"),
        ("Node", "NodeUnpublishVolume", csi_pb2.NodeUnpublishVolumeRequest(target_path=target), invalid,
         "volume_id is required"),
        ("Node", "NodeGetVolumeStats", csi_pb2.NodeGetVolumeStatsRequest(volume_id="nope", volume_path=target),
         not_found, "volume nope is not published"),
        ("Node", "NodeGetVolumeStats", csi_pb2.NodeGetVolumeStatsRequest(volume_id="nope"), invalid,
         "volume_path is required"),
        # csi-sanity's "volume is not found" sends a relative path: no volume is there (the spec's NOT_FOUND).
        ("Node", "NodeGetVolumeStats", csi_pb2.NodeGetVolumeStatsRequest(volume_id="nope", volume_path="some/path"),
         not_found, "volume nope is not published at volume_path 'some/path'"),
        # A path outside the kubelet root is refused, whatever the volume: the driver does not look there.
        ("Node", "NodeGetVolumeStats", csi_pb2.NodeGetVolumeStatsRequest(volume_id="nope", volume_path="/etc/x"),
         invalid, "volume_path '/etc/x' is outside"),
        ("Node", "NodeGetVolumeStats", csi_pb2.NodeGetVolumeStatsRequest(
            volume_id="nope", volume_path=f"{target}/../../../etc"), invalid, "must not contain '..'"),
        ("Controller", "CreateVolume", csi_pb2.CreateVolumeRequest(volume_capabilities=[MOUNT]), invalid,
         "name is required"),
        ("Controller", "CreateVolume", csi_pb2.CreateVolumeRequest(name="pvc-x"), invalid,
         "volume_capabilities is required"),
        ("Controller", "CreateVolume", csi_pb2.CreateVolumeRequest(
            name="pvc-x", volume_capabilities=[MOUNT], parameters={"backingDir": "/"}),
         invalid, "parameters[backingDir]: not settable here: set by the driver"),
        ("Controller", "CreateVolume", csi_pb2.CreateVolumeRequest(
            name="pvc-x", volume_capabilities=[MOUNT], parameters={"tracing.sample_ratio": "2"}),
         invalid, "tracing.sample_ratio"),
        ("Controller", "DeleteVolume", csi_pb2.DeleteVolumeRequest(), invalid, "volume_id is required"),
        ("Controller", "DeleteVolume", csi_pb2.DeleteVolumeRequest(volume_id="../etc"), invalid,
         "is not a volume id of this driver"),
        ("Controller", "ValidateVolumeCapabilities", csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id="pvc-none", volume_capabilities=[MOUNT]), not_found, "volume pvc-none does not exist"),
    ]  # fmt: skip
    (plugin.host / "link").symlink_to("/etc")
    for service, method, request, code, message in cases:
        details = expect_error(plugin, service, method, request, code)
        assert message in details, f"{method}: {details!r} lacks {message!r}"
    assert plugin.publications() == [], "a refused publish leaves no record"
    assert not Path(target).exists(), "a refused publish makes no target directory"
    assert list((plugin.state / "interposers").iterdir()) == []


def test_conflicting_publish_is_refused_and_changes_nothing(plugin: CsiPlugin) -> None:
    target = target_in(plugin, "taken")
    publish(plugin, "csi-one", target, POD)
    request = csi_pb2.NodePublishVolumeRequest(
        volume_id="csi-two", target_path=str(target), volume_capability=MOUNT, volume_context=POD
    )
    assert "already holds volume csi-one" in expect_error(
        plugin, "Node", "NodePublishVolume", request, grpc.StatusCode.ALREADY_EXISTS
    )
    request.volume_id = "csi-one"
    request.readonly = True
    expect_error(plugin, "Node", "NodePublishVolume", request, grpc.StatusCode.ALREADY_EXISTS)
    wrong = csi_pb2.NodeUnpublishVolumeRequest(volume_id="csi-two", target_path=str(target))
    expect_error(plugin, "Node", "NodeUnpublishVolume", wrong, grpc.StatusCode.NOT_FOUND)
    assert mount_at(target) is not None
    unpublish(plugin, "csi-one", target)


def test_a_server_that_cannot_start_is_reported_and_undone(scratch: Path) -> None:
    """The driver's own server settings (here its metrics port, taken) fail the publish, and nothing is left."""
    require_fuse()
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    environment = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)}
    with taken, CsiPlugin(scratch, env=environment) as plugin:
        target = target_in(plugin, "broken")
        request = csi_pb2.NodePublishVolumeRequest(
            volume_id="csi-broken", target_path=str(target), volume_capability=MOUNT, volume_context=POD
        )
        details = expect_error(plugin, "Node", "NodePublishVolume", request, grpc.StatusCode.INTERNAL)
        assert "cannot start the server" in details
        assert f"cannot listen on 127.0.0.1:{port}" in details
        assert plugin.publications() == []
        assert mount_at(target) is None
        assert not target.exists()
        assert list((plugin.state / "fresh").iterdir()) == []


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ({"fuse.max_workers": "8"}, "fuse.max_workers"),
        ({"metrics.prometheus_port": "9000"}, "metrics.prometheus_port"),
        ({"backend.max_inode_fds": "100"}, "backend.max_inode_fds"),
        ({"config": "fuse: {allow_other: false}"}, "fuse.allow_other"),
        ({"config": "control: {socket: /tmp/x}", "cache.direct_io": "true"}, "control.socket"),
        ({"tracing.endpoint": "http://evil:4317"}, "tracing.endpoint"),
    ],
)
def test_volume_attributes_outside_the_allow_list_are_refused_by_name(attributes: dict[str, str], field: str) -> None:
    with pytest.raises(CsiError) as raised:
        parse(attributes, "volume_context")
    assert raised.value.message.startswith(f"volume_context[{field}]: not settable by a volume")
    assert raised.value.message.endswith(f"allowed: {ALLOWED} (and fields under them)")


def test_every_allowed_field_is_a_field_of_the_config_model() -> None:
    for dotted in VOLUME_FIELDS:
        model: type[BaseModel] = InterposerConfig
        *sections, name = dotted.split(".")
        for section in sections:
            annotation = model.model_fields[section].annotation
            assert isinstance(annotation, type), dotted
            assert issubclass(annotation, BaseModel), dotted
            model = annotation
        assert name in model.model_fields, dotted
    allowed = parse(
        {"cache.direct_io": "true", "fuse.xattrs": "false", "throttle.read_iops.rate": "5", "faults.enabled": "false"},
        "x",
    )
    assert allowed.config == {
        "cache": {"direct_io": True},
        "fuse": {"xattrs": False},
        "throttle": {"read_iops": {"rate": 5}},
        "faults": {"enabled": False},
    }


def test_a_dead_server_is_noticed_without_anyone_asking(scratch: Path) -> None:
    """The plugin looks at its volumes' servers on its own (--watch-interval): a killed server is logged and
    recorded as lost though nothing calls NodeGetVolumeStats or scrapes the plugin."""
    require_fuse()
    with CsiPlugin(scratch, "--watch-interval", "0.5") as plugin:
        target = target_in(plugin, "watched")
        publish(plugin, "csi-watched", target, POD)
        [publication] = plugin.publications()
        assert publication.pid is not None
        assert publication.lost is None
        os.kill(publication.pid, signal.SIGKILL)
        wait_for(lambda: plugin.publications()[0].lost is not None, what="the plugin to record the server lost")
        assert f"volume csi-watched at {target}: " in plugin.log()
        assert "gone" in (plugin.publications()[0].lost or "")
        unpublish(plugin, "csi-watched", target)
