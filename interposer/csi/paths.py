"""Confining paths from requests to the roots the driver may touch.

A path from a request or a volume attribute is refused when it has a ``..``
component, or when it resolves (symlinks followed) outside its root: a pod
must not reach the host's files through a crafted ``backingDir`` or target.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from .errors import invalid


def _inside(path: Path, root: Path) -> bool:
    return path != root and root in path.parents


def confine(text: str, root: Path, field: str, *, relative: bool) -> Path:
    """``text`` resolved inside ``root``; ``relative`` paths are taken from ``root``, others must be absolute.

    The resolved path is returned because the kernel's mount table shows resolved
    paths: a kubelet directory behind a symlink must still match its mounts.
    """
    pure = PurePosixPath(text)
    if ".." in pure.parts:
        raise invalid(f"{field} {text!r} must not contain '..'")
    if relative and pure.is_absolute():
        raise invalid(f"{field} {text!r} must be relative to {root}")
    if not relative and not pure.is_absolute():
        raise invalid(f"{field} {text!r} must be an absolute path")
    real_root = Path(os.path.realpath(root))
    resolved = Path(os.path.realpath(real_root / pure if relative else pure))
    if not _inside(resolved, real_root):
        raise invalid(f"{field} {text!r} is outside {root} (symlinks are followed)")
    return resolved


def confine_mountpoint(text: str, root: Path, field: str) -> Path:
    """An absolute mountpoint inside ``root``: its parent resolved, its last component taken as it is.

    Resolving the mountpoint itself would stat it, and a stat of a mount whose
    server hangs never returns: an RPC about a hung volume must not hang too.
    """
    pure = PurePosixPath(text)
    if not pure.is_absolute():
        raise invalid(f"{field} {text!r} must be an absolute path")
    if ".." in pure.parts:
        raise invalid(f"{field} {text!r} must not contain '..'")
    real_root = Path(os.path.realpath(root))
    resolved = Path(os.path.realpath(pure.parent)) / pure.name
    if not _inside(resolved, real_root):
        raise invalid(f"{field} {text!r} is outside {root} (symlinks are followed)")
    return resolved
