"""A volume's server: receives the /dev/fuse descriptor the node plugin mounted, and serves it.

Run as ``python -m interposer.csi.volume_server``, by the local launcher as a
detached process in a cgroup of its own, or as the command of a per-volume pod.
It needs no CAP_SYS_ADMIN: the mount exists before it gets the descriptor, and
it never unmounts (the plugin does, on NodeUnpublishVolume).  Its lifetime is
its own: the plugin may die, restart or be replaced while it serves.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ..config import ConfigError, load_config
from ..logs import configure_logging
from . import handover

log = logging.getLogger(__name__)


def join_cgroup(directory: Path) -> None:
    """Move this process into ``directory`` (made if missing) before it starts any child process."""
    directory.mkdir(exist_ok=True)
    (directory / "cgroup.procs").write_text("0\n")


@click.command()
@click.argument("backing", type=click.Path(path_type=Path, file_okay=False))
@click.option("--mountpoint", type=click.Path(path_type=Path), required=True, help="Where the plugin mounts it.")
@click.option("--handover", "handover_path", type=click.Path(path_type=Path), required=True, help="Unix socket.")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option("--cgroup", type=click.Path(path_type=Path, file_okay=False), help="cgroup v2 directory to run in.")
@click.option("--handover-timeout", type=click.FloatRange(0.1, 3600), default=60.0, show_default=True)
def main(
    backing: Path,
    mountpoint: Path,
    handover_path: Path,
    config_file: Path,
    cgroup: Path | None,
    handover_timeout: float,
) -> None:
    """Serve BACKING through the FUSE descriptor handed over on --handover, until unmounted or SIGTERM."""
    from ..mount.serve import Mount, MountError

    if cgroup is not None:
        join_cgroup(cgroup)
    try:
        config = load_config(config_file)
    except ConfigError as exc:
        sys.exit(f"interposer volume server: {exc}")
    configure_logging(config.log_level)
    try:
        mount = Mount(backing, mountpoint, config)
        with handover.listen(handover_path) as listener:
            log.info("waiting for the /dev/fuse descriptor on %s", handover_path)
            fd = handover.receive(listener, handover_timeout)
        handover_path.unlink(missing_ok=True)
        mount.serve(fuse_fd=fd)
    except (ConfigError, MountError, OSError, RuntimeError, ValueError) as exc:
        log.error("%s", exc)
        sys.exit(f"interposer volume server: {exc}")


if __name__ == "__main__":
    main()
