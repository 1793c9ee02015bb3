"""The driver's container image, as ``./tasks.sh image`` writes it to dist/image.oci.tar, built and run.

The archive is read as kubelet's runtime would get it (``kind load
image-archive``): its manifest's annotations, its config and every layer.
Then a container from it runs ``interposer csi`` as the DaemonSet does (root,
CAP_SYS_ADMIN, /dev/fuse, the host directories bind-mounted at their own
paths) and the test drives it over the socket it serves.

The container is started with ``buildah run --isolation chroot``: the
runtimes buildah and podman would use otherwise (crun) cannot start here,
where cgroups are in hybrid mode and raising rlimits is not permitted.  A
chroot-isolated container has its own mount namespace, which is private, so
its FUSE mounts do not propagate to the host; the test sees them as the
container does, through ``/proc/<pid>/mountinfo`` and ``/proc/<pid>/root`` of
the plugin's process (in a cluster, Bidirectional propagation of the kubelet
directory makes them visible to kubelet).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

import interposer
from interposer.csi import csi_pb2
from interposer.names import CSI_DRIVER_NAME
from tools import image

from .conftest import require_command, require_fuse, wait_for
from .csi_plugin import CsiPlugin
from .test_csi import POD, publish, target_in, unpublish
from .test_csi_sanity import MODES, run_suite

BUILD_HOST_FILES = ("etc/pip.conf", "etc/apt/apt.conf.d/99build-host", image.CA_TARGET.lstrip("/"))
"""Where the build mounts this machine's settings: none may be in a layer."""
REVISION = "org.opencontainers.image.revision"
KIND_LOAD = image.ROOT / "tools" / "reference" / "kind-load.yaml"
"""How kind names an archive's image (python -m tools.reference.kind_load)."""
NOT_IN_THE_RUNTIME = (
    "site-packages/matplotlib/",
    "site-packages/grpc_tools/",
    "usr/bin/gcc",
    "usr/include/fuse3/",
    "site-packages/pip/",
)


class Archive:
    """An OCI archive: its index, the one image's manifest and config, and its layers' file names."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with tarfile.open(path) as archive:
            self.index = self._json(archive, "index.json")
            [descriptor] = self.index["manifests"]
            self.manifest = self._json(archive, self._blob(descriptor))
            self.config = self._json(archive, self._blob(self.manifest["config"]))
            self.layers: list[dict[str, bytes | None]] = []
            self.modes: dict[str, int] = {}
            for layer in self.manifest["layers"]:
                blob = archive.extractfile(self._blob(layer))
                assert blob is not None
                with tarfile.open(fileobj=blob, mode="r:*") as files:
                    members = {member.name.removeprefix("./"): member for member in files}
                    self.layers.append({name: self._digest(files, member) for name, member in members.items()})
                    self.modes.update({name: member.mode for name, member in members.items()})

    def revision(self) -> str:
        return str(self.manifest.get("annotations", {}).get(REVISION))

    @staticmethod
    def _blob(descriptor: dict[str, Any]) -> str:
        algorithm, digest = descriptor["digest"].split(":")
        return f"blobs/{algorithm}/{digest}"

    @staticmethod
    def _json(archive: tarfile.TarFile, name: str) -> dict[str, Any]:
        member = archive.extractfile(name)
        assert member is not None
        loaded: dict[str, Any] = json.load(member)
        return loaded

    @staticmethod
    def _digest(files: tarfile.TarFile, member: tarfile.TarInfo) -> bytes | None:
        """The SHA-256 of a regular file's content (None for anything else)."""
        content = files.extractfile(member) if member.isfile() else None
        return None if content is None else hashlib.sha256(content.read()).digest()


@pytest.fixture(scope="session")
def archive() -> Archive:
    require_command("buildah")
    require_command("debootstrap")
    # ./tasks.sh test has just written it; a run of this file alone rebuilds it when HEAD moved.
    if not image.ARCHIVE.is_file() or Archive(image.ARCHIVE).revision() != image.revision():
        image.build()
    return Archive(image.ARCHIVE)


@pytest.fixture(scope="session")
def container(archive: Archive) -> Iterator[str]:
    """A working container made from the archive (not from the image store), as a cluster would get it."""
    name = image.buildah("from", "--pull-never", "--quiet", f"oci-archive:{archive.path}", capture=True)
    yield name
    image.buildah("rm", name)


def test_the_archive_carries_the_charts_reference_and_the_oci_annotations(archive: Archive) -> None:
    [descriptor] = archive.index["manifests"]
    name = descriptor["annotations"]["org.opencontainers.image.ref.name"]
    assert name == image.reference()
    # kind load image-archive imports without a base name, so containerd keeps only a full reference as is.
    facts = yaml.safe_load(KIND_LOAD.read_text())
    assert not [word for word in facts["kind"]["import_command"] if word.startswith(("--base-name", "--index-name"))]
    assert set(name) & set(facts["containerd"]["full_reference_characters"])
    expected = {
        "org.opencontainers.image.version": interposer.__version__,
        "org.opencontainers.image.source": image.source_url(),
        REVISION: image.revision(),
    }
    assert archive.manifest["annotations"].items() >= expected.items()
    assert archive.config["config"]["Labels"].items() >= expected.items()
    assert archive.config["config"]["User"] == "65532:65532", "the image does not run as root by default"


def test_no_layer_holds_build_host_settings_or_build_tools(archive: Archive) -> None:
    host_ca = image.ca_bundle()
    host_ca_digest = None if host_ca is None else hashlib.sha256(host_ca.read_bytes()).digest()
    for number, files in enumerate(archive.layers):
        for name, digest in files.items():
            assert name not in BUILD_HOST_FILES, f"layer {number} holds {name}"
            assert digest is None or digest != host_ca_digest, f"layer {number}: {name} is this machine's CA bundle"
            assert not any(part in name for part in NOT_IN_THE_RUNTIME), f"layer {number} holds {name}"
    everything = set().union(*archive.layers)
    assert any(name.endswith("interposer/csi/csi_pb2.py") for name in everything)
    assert archive.modes["usr/bin/fusermount3"] & 0o4000, "setuid: the default user mounts through it"


class ContainerPlugin(CsiPlugin):
    """``interposer csi`` in a container of the image, run as the DaemonSet runs it."""

    def __init__(self, root: Path, container: str, *extra: str, share: Path | None = None) -> None:
        """``share``: the host directory the container sees at the same path (default: ``root``)."""
        shared = root if share is None else share
        run = image.buildah_command(
            "run", "--isolation", "chroot", "--user", "0:0", "--cap-add", "CAP_SYS_ADMIN",
            "--volume", "/dev/fuse:/dev/fuse", "--volume", f"{shared}:{shared}", container, "--", "interposer",
        )  # fmt: skip
        super().__init__(root, *extra, program=run)

    def pid(self) -> int:
        """The host pid of the containerised ``interposer csi`` (a chroot-isolated container shares the pid space)."""
        endpoint = f"unix://{self.socket}".encode()
        for entry in Path("/proc").iterdir():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
                program = (entry / "exe").resolve().name
            except OSError:
                continue
            if program.startswith("python") and endpoint in command:
                return int(entry.name)
        raise AssertionError(f"no interposer csi process serves {self.socket}")

    def mounts(self) -> str:
        """The container's mount table."""
        return Path(f"/proc/{self.pid()}/mountinfo").read_text()

    def inside(self, path: Path) -> Path:
        """``path`` as the container sees it."""
        return Path(f"/proc/{self.pid()}/root") / path.relative_to("/")

    def stop(self) -> int:
        """SIGTERM to the plugin in the container; buildah run returns with its exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            os.kill(self.pid(), signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self.process = None
        return code


def exited(pid: int) -> bool:
    """Gone, or a zombie its parent (the plugin, which reaps its servers in its own time) has yet to reap."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_the_image_serves_csi_and_publishes_a_fuse_volume(container: str, scratch: Path) -> None:
    require_fuse()
    with ContainerPlugin(scratch, container) as plugin:
        info = plugin.call("Identity", "GetPluginInfo", csi_pb2.GetPluginInfoRequest())
        assert (info.name, info.vendor_version) == (CSI_DRIVER_NAME, interposer.__version__)
        assert plugin.call("Identity", "Probe", csi_pb2.ProbeRequest()).ready.value is True
        assert plugin.call("Node", "NodeGetInfo", csi_pb2.NodeGetInfoRequest()).node_id == "node-a"

        backing = plugin.host / "data"
        backing.mkdir()
        target = target_in(plugin, "image")
        publish(plugin, "csi-image", target, {**POD, "backingDir": "data"})
        [entry] = [line for line in plugin.mounts().splitlines() if line.split()[4] == str(target)]
        assert "fuse.interposer" in entry.split(" - ")[1]
        plugin.inside(target / "written-in-the-container").write_text("through the image's mount")
        assert (backing / "written-in-the-container").read_text() == "through the image's mount"
        [publication] = plugin.publications()
        server = publication.pid
        assert server is not None

        unpublish(plugin, "csi-image", target)
        assert str(target) not in plugin.mounts()
        assert plugin.publications() == []
        wait_for(lambda: exited(server), what="the volume's server to exit")
        assert plugin.stop() == 0
    assert str(scratch) not in Path("/proc/self/mountinfo").read_text(), "nothing is left mounted"


@pytest.mark.parametrize("mode", MODES)
def test_csi_sanity_passes_in_full_against_the_image(container: str, mode: str, scratch: Path) -> None:
    # Both processes see all of scratch: the controller makes volumes under the node's volumes root.
    run_suite(mode, scratch, lambda root, *extra: ContainerPlugin(root, container, *extra, share=scratch))


def test_the_base_release_and_mirror_come_from_the_dockerfile_and_apt_sources(tmp_path: Path) -> None:
    assert image.base_image() == ("debian:bookworm-slim", "bookworm")
    (tmp_path / "Dockerfile").write_text("FROM debian:bookworm-slim AS build\nFROM ubuntu:24.04\n")
    with pytest.raises(click.ClickException, match="expected one base image"):
        image.base_image(tmp_path / "Dockerfile")
    (tmp_path / "Dockerfile").write_text("FROM alpine:3\n")
    with pytest.raises(click.ClickException, match="allowed: debian:<release>"):
        image.base_image(tmp_path / "Dockerfile")

    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Types: deb\n# a comment: with a colon\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
    )
    assert image.debian_mirror("bookworm", tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://old.example/debian trixie main\n")
    assert image.debian_mirror("trixie", tmp_path) == "http://old.example/debian"
    with pytest.raises(click.ClickException, match="no apt source for Debian sid"):
        image.debian_mirror("sid", tmp_path)
