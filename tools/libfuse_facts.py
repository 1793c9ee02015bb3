"""Extract what the CSI driver relies on from libfuse's and pyfuse3's source, into tests/facts/libfuse.json.

The node plugin mounts /dev/fuse itself and a volume server serves it as
``/dev/fd/N``; both halves must match what libfuse does.  Usage, with bare git
directories of libfuse/libfuse and libfuse/pyfuse3:

    python tools/libfuse_facts.py LIBFUSE_GIT PYFUSE3_GIT > tests/facts/libfuse.json

The tags read are Debian bookworm's libfuse (3.14.0) and the pyfuse3 release
pinned by pyproject.toml's lower bound (3.4.0).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

LIBFUSE_TAG = "fuse-3.14.0"
PYFUSE3_TAG = "3.4.0"


def show(git_dir: str, tag: str, path: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", git_dir, "show", f"{tag}:{path}"], capture_output=True, text=True, check=True
    ).stdout


def function(source: str, signature: str) -> str:
    """The body of the C function or Python def that starts with ``signature``, up to the next top-level one."""
    start = source.index(signature)
    end = re.compile(r"^(\}|def )", re.MULTILINE).search(source, start + len(signature))
    assert end is not None, signature
    return source[start : end.end()]


def extract(libfuse: str, pyfuse3: str) -> dict[str, object]:
    mount_c = show(libfuse, LIBFUSE_TAG, "lib/mount.c")
    lowlevel = show(libfuse, LIBFUSE_TAG, "lib/fuse_lowlevel.c")
    mount_util = show(libfuse, LIBFUSE_TAG, "lib/mount_util.c")
    pyx = show(pyfuse3, PYFUSE3_TAG, "src/pyfuse3/__init__.pyx")

    mount_sys = function(mount_c, "static int fuse_mount_sys(")
    data = re.search(r'snprintf\(tmp, sizeof\(tmp\),\s*"([^"]+)"', mount_sys)
    flags = re.search(r"mo->flags = ([A-Z_ |]+);", function(mount_c, "struct mount_opts *parse_mount_opts("))
    kernel_options = re.findall(r'FUSE_OPT_KEY\("(\w+)",\s*KEY_KERN_OPT\)', mount_c)
    session_mount = function(lowlevel, "int fuse_session_mount(")
    fd_branch = session_mount.index("fuse_mnt_parse_fuse_fd(mountpoint)")
    saves_mountpoint = session_mount.index("se->mountpoint = strdup(mountpoint)")
    unmount = function(lowlevel, "void fuse_session_unmount(")
    parse_fd = re.search(r'sscanf\(mountpoint, "([^"]+)"', function(mount_util, "int fuse_mnt_parse_fuse_fd("))
    close = function(pyx, "def close(")
    init = function(pyx, "def init(")
    if not (data and flags and parse_fd):
        raise SystemExit("libfuse's source changed shape: update the extraction")
    return {
        "libfuse": LIBFUSE_TAG,
        "pyfuse3": PYFUSE3_TAG,
        "mount_data_prefix": data.group(1),
        "default_mount_flags": [flag.strip() for flag in flags.group(1).split("|")],
        "mount_type": "fuse." + "<subtype>" if 'strcat(type, ".")' in mount_sys else "fuse",
        "kernel_options": kernel_options,
        "descriptor_mountpoint": parse_fd.group(1).replace("%n", ""),
        "descriptor_mountpoint_is_not_unmounted": fd_branch < saves_mountpoint
        and "if (se->mountpoint != NULL)" in unmount,
        "pyfuse3_init_passes_mountpoint_to_fuse_session_mount": "fuse_session_mount(session" in init,
        "pyfuse3_close_unmounts_with_fuse_session_unmount": "fuse_session_unmount(session)" in close,
    }


if __name__ == "__main__":
    print(json.dumps(extract(sys.argv[1], sys.argv[2]), indent=2))
