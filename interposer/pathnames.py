"""How the interposer spells paths below the mount root, for every backend and every layer."""

from __future__ import annotations

import posixpath

DELETED_SUFFIX = " (deleted)"
"""Marks the last path of an object unlinked while still referenced."""


def child_path(parent: str, name: bytes) -> str:
    """The path of entry ``name`` in directory ``parent`` (``.`` and ``..`` resolved)."""
    text = name.decode("utf-8", "surrogateescape")
    if text == ".":
        return parent
    if text == "..":
        return posixpath.dirname(parent)
    if parent == "/":
        return "/" + text
    return parent + "/" + text
