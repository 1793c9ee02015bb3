"""Reading the mount table and taking FUSE mounts down, including stale ones.

A FUSE mount whose server died stays in the mount table and answers every
access with ENOTCONN ("Transport endpoint is not connected").  Such a mount is
detected here so the CLI can say so plainly instead of failing obscurely.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo that matters here."""

    mountpoint: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return field.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "surrogateescape")


def mount_at(path: str | os.PathLike[str]) -> MountEntry | None:
    """The mount whose mountpoint is exactly ``path`` (the last one, if stacked)."""
    target = os.path.abspath(path)
    found = None
    for line in _MOUNTINFO.read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields = before.split()
        fstype, source = after.split()[:2]
        if _unescape(fields[4]) == target:
            found = MountEntry(target, fstype, _unescape(source))
    return found


def is_stale(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a FUSE mount whose server is gone."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def unmount(path: str | os.PathLike[str], *, lazy: bool = False) -> None:
    """Unmount a FUSE mount; ``lazy`` detaches it even when busy or stale."""
    target = os.path.abspath(path)
    fusermount = shutil.which("fusermount3") or shutil.which("fusermount")
    if fusermount is not None:
        command = [fusermount, "-u", *(["-z"] if lazy else []), "--", target]
    else:
        command = ["umount", *(["-l"] if lazy else []), target]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OSError(errno.EBUSY, f"cannot unmount {target}: {result.stderr.strip() or result.stdout.strip()}")
