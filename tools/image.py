"""Build the driver's container image with buildah and write it as an OCI archive (``./tasks.sh image``).

No registry is contacted.  The base image the Dockerfile's ``FROM`` names
(``debian:<release>-slim``) is made here: debootstrap (``--variant=minbase``)
of that release from the Debian mirror this machine's apt sources name,
committed under the ``FROM`` name, and kept in the image store under
``.tools/containers`` so later builds start from it at once.

This machine's own settings for reaching Debian and PyPI (its CA bundle, the
network part of its pip configuration, its apt proxy) are handed to the build
as secrets: buildah mounts them for the RUN steps that ask for them and they
are in no layer of the image.

The image is named ``<chart image.repository>:<package version>``, the
reference the chart defaults to, and carries the OCI annotations and labels
version, revision and source.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import yaml

import interposer

from .steps import TERMINAL, StepLog

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
CHART = ROOT / "charts" / "interposer"
ARCHIVE = ROOT / "dist" / "image.oci.tar"
LOG = ROOT / "build" / "image.log"
"""The build's tool output (debootstrap, apt, debconf, pip, buildah): the terminal gets one line per step."""
STORE = ROOT / ".tools" / "containers"
CA_TARGET = "/etc/ssl/certs/build-host-ca.crt"
"""Where the Dockerfile mounts the ``cacert`` secret; the pip and apt secrets point at it."""
BASE = re.compile(r"^(?:docker\.io/(?:library/)?)?debian:(?P<release>[a-z]+)(?:-slim)?$")
PIP_NETWORK_KEYS = ("index-url", "extra-index-url", "proxy", "trusted-host", "timeout", "retries")
"""The parts of pip's configuration that say how to reach an index; local paths stay on this machine."""


def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def reference() -> str:
    """The image's name and tag: the chart's repository and the package version (the chart's appVersion)."""
    return f"{chart_values()['image']['repository']}:{interposer.__version__}"


def source_url() -> str:
    """The project's source repository, as the chart names it."""
    chart: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return str(chart["sources"][0])


def base_image(dockerfile: Path = DOCKERFILE) -> tuple[str, str]:
    """The base image every ``FROM`` of the Dockerfile names, and its Debian release."""
    bases = {line.split()[1] for line in dockerfile.read_text().splitlines() if line.upper().startswith("FROM ")}
    if len(bases) != 1:
        raise click.ClickException(f"{dockerfile}: expected one base image in FROM, found {sorted(bases)}")
    [base] = bases
    match = BASE.match(base)
    if match is None:
        raise click.ClickException(f"{dockerfile}: FROM {base}: allowed: debian:<release> or debian:<release>-slim")
    return base, match["release"]


def debian_mirror(release: str, apt_dir: Path = Path("/etc/apt")) -> str:
    """The URI this machine's apt sources use for ``release`` (deb822 .sources files or sources.list)."""
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith("#")
            )
            if "deb" in fields.get("Types", "").split() and release in fields.get("Suites", "").split():
                return fields["URIs"].split()[0]
    for path in [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]:
        for line in path.read_text().splitlines() if path.is_file() else []:
            words = [word for word in line.split() if not word.startswith("[")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == release:
                return words[1]
    raise click.ClickException(f"no apt source for Debian {release} in {apt_dir}")


def buildah_command(*arguments: str) -> list[str]:
    """buildah on the project's own image store.

    The overlay driver stores a layer as its changes; vfs, which needs no
    mount, copies the whole tree for every layer and made a build several
    times slower here.
    """
    store = ["--root", str(STORE / "storage"), "--runroot", str(STORE / "run"), "--storage-driver", "overlay"]
    return ["buildah", *store, *arguments]


def buildah(*arguments: str, capture: bool = False, log: StepLog = TERMINAL) -> str:
    """Run buildah, its output in ``log``; a failure names the command."""
    return log.run(buildah_command(*arguments), capture=capture)


def has_image(name: str) -> bool:
    found = subprocess.run(buildah_command("inspect", "--type", "image", name), capture_output=True, check=False)
    return found.returncode == 0


def make_base(base: str, release: str, log: StepLog) -> None:
    """debootstrap ``release`` into a scratch container and commit it as ``base``."""
    mirror = debian_mirror(release)
    log.step(f"debootstrap {release} (minbase) from {mirror} as {base}")
    container = buildah("from", "scratch", capture=True, log=log)
    try:
        rootfs = Path(buildah("mount", container, capture=True, log=log))
        log.run(["debootstrap", "--variant=minbase", release, str(rootfs), mirror])
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / cache).glob("*"):
                if path.is_file():
                    path.unlink()
        buildah("umount", container, log=log)
        buildah("config", "--cmd", "bash", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                container, log=log)  # fmt: skip
        name = f"docker.io/library/{base.removeprefix('docker.io/library/')}"
        buildah("commit", "--quiet", container, name, log=log)
    finally:
        buildah("rm", container, log=log)


def proxy_from_environment(scheme: str) -> str | None:
    """The proxy this process's environment names for ``scheme`` (curl's and pip's convention)."""
    return os.environ.get(f"{scheme}_proxy") or os.environ.get(f"{scheme.upper()}_PROXY")


def pip_network_settings() -> list[str]:
    """``key = value`` lines of this machine's pip configuration (files and PIP_* variables) that reach an index.

    Index URLs that are local paths (``file:``, find-links directories) stay on this machine.
    """
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    settings: dict[str, str] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        name, value = key.rpartition(".")[2], value.strip().strip("'\"")
        if name in ("index-url", "extra-index-url"):
            value = " ".join(word for word in value.split() if word.startswith(("http://", "https://")))
        if name in PIP_NETWORK_KEYS and value:
            settings[name] = value
    proxy = proxy_from_environment("https")
    if proxy and "proxy" not in settings:
        settings["proxy"] = proxy
    return [f"{name} = {value}" for name, value in settings.items()]


def apt_proxy_settings() -> list[str]:
    """This machine's apt proxy settings (apt's configuration, else the environment), as apt.conf lines."""
    dump = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, check=True).stdout
    lines = [line for line in dump.splitlines() if re.match(r"Acquire::(https?|ftp)::Proxy", line)]
    for scheme in ("http", "https"):
        proxy = proxy_from_environment(scheme)
        if proxy and not any(line.startswith(f"Acquire::{scheme}::Proxy") for line in lines):
            lines.append(f'Acquire::{scheme}::Proxy "{proxy}";')
    return lines


def ca_bundle() -> Path | None:
    """The CA bundle this machine's pip and TLS clients trust."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@contextmanager
def build_secrets() -> Iterator[list[str]]:
    """``--secret`` arguments carrying this machine's CA bundle, pip and apt settings, for the build only."""
    with tempfile.TemporaryDirectory(prefix="image-secrets-") as directory:
        arguments = []
        pip_lines, apt_lines = pip_network_settings(), apt_proxy_settings()
        bundle = ca_bundle()
        if bundle is not None:
            arguments += ["--secret", f"id=cacert,src={bundle}"]
            pip_lines.insert(0, f"cert = {CA_TARGET}")
            apt_lines.append(f'Acquire::https::CAInfo "{CA_TARGET}";')
        pip_conf, apt_conf = Path(directory) / "pip.conf", Path(directory) / "apt.conf"
        pip_conf.write_text("\n".join(["[global]", *pip_lines]) + "\n")
        apt_conf.write_text("\n".join(apt_lines) + "\n")
        arguments += ["--secret", f"id=pipconf,src={pip_conf}", "--secret", f"id=aptconf,src={apt_conf}"]
        yield arguments


def revision() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def image_annotations() -> dict[str, str]:
    """The OCI annotations (and labels) of the image."""
    return {
        "org.opencontainers.image.version": interposer.__version__,
        "org.opencontainers.image.revision": revision(),
        "org.opencontainers.image.source": source_url(),
    }


def annotate(name: str, notes: dict[str, str], log: StepLog) -> None:
    """Set ``notes`` as the labels and annotations of image ``name``.

    Done after the build, not with build arguments: buildah's layer cache
    reuses a step whose build argument changed, which would keep the old
    revision.
    """
    container = buildah("from", "--pull-never", "--quiet", name, capture=True, log=log)
    try:
        settings = [f"--{kind}={key}={value}" for key, value in notes.items() for kind in ("label", "annotation")]
        buildah("config", *settings, container, log=log)
        buildah("commit", "--quiet", container, name, log=log)
    finally:
        buildah("rm", container, log=log)


def build(archive: Path = ARCHIVE, extra: Sequence[str] = (), log_path: Path = LOG) -> str:
    """Build the image from the Dockerfile and write ``archive``; returns the image's reference."""
    base, release = base_image()
    name = reference()
    with StepLog(log_path) as log:
        if not has_image(base):
            make_base(base, release, log)
        log.step(f"buildah bud {name} (tool output: {log_path})")
        with build_secrets() as secrets:
            buildah(
                "bud", "--layers", "--pull-never", "--isolation", "chroot", "--format", "oci",
                *secrets, "--file", str(DOCKERFILE), "--tag", name, *extra, str(ROOT), log=log,
            )  # fmt: skip
        log.step(f"annotate {name} and write {archive}")
        annotate(name, image_annotations(), log)
        archive.parent.mkdir(parents=True, exist_ok=True)
        archive.unlink(missing_ok=True)
        buildah("push", "--quiet", name, f"oci-archive:{archive}:{name}", log=log)
        size = buildah("images", "--format", "{{.Size}}", name, capture=True, log=log)
    click.echo(f"wrote {archive} ({archive.stat().st_size / 1e6:.0f} MB archive; image {size})")
    return name


@click.command()
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), default=ARCHIVE, show_default=True)
def main(output: Path) -> None:
    """Build the driver's image with buildah and write it as an OCI archive."""
    build(output)


if __name__ == "__main__":
    main()
