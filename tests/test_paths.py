"""Inode-to-path resolution for the cases the kernel never sends through a mount: '.', '..', the root,
and exchanges.  Everything else is covered through real mounts in test_tracing.py."""

from __future__ import annotations

import os
from pathlib import Path

from interposer.backends.handles import Handle
from interposer.backends.inode_table import ROOT_INODE, InodeTable
from interposer.fuse.request import Request
from interposer.names import OpName


class Resolver:
    def __init__(self, table: InodeTable) -> None:
        self.table = table

    def path_of_inode(self, inode: int) -> str:
        return self.table.path_of_inode(inode)

    def paths_of_inode(self, inode: int) -> list[str]:
        return self.table.paths_of_inode(inode)

    def handle(self, fh: int) -> Handle:
        raise AssertionError("no handle requests here")


def lookup(table: InodeTable, parent: int, root: Path, relative: str) -> int:
    return table.acquire(parent, os.path.basename(relative).encode(), os.lstat(root / relative)).ino


def test_dot_dotdot_root_and_exchange(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "x").write_text("")
    table = InodeTable(str(tmp_path), 64)
    resolver = Resolver(table)
    a = lookup(table, ROOT_INODE, tmp_path, "a")
    b = lookup(table, a, tmp_path, "a/b")
    x = lookup(table, a, tmp_path, "a/x")
    assert table.path_of_inode(ROOT_INODE) == "/"
    assert table.path_of_inode(b) == "/a/b"

    def entry_path(parent: int, name: bytes) -> str:
        request = Request(OpName.LOOKUP)
        request.inode, request.entry_name = parent, name
        return request.resolve(resolver).path

    assert entry_path(b, b".") == "/a/b"
    assert entry_path(b, b"..") == "/a"
    assert entry_path(a, b"..") == "/"
    assert entry_path(ROOT_INODE, b"..") == "/"
    # '.' and '..' count a reference but never become names.
    assert table.acquire(b, b"..", os.lstat(tmp_path / "a")).ino == a
    assert table.paths_of_inode(a) == ["/a"]

    os.rename(tmp_path / "a", tmp_path / "renamed")
    table.renamed((ROOT_INODE, b"a"), (ROOT_INODE, b"renamed"), exchange=False)
    assert table.path_of_inode(x) == "/renamed/x"
    table.renamed((a, b"b"), (a, b"x"), exchange=True)
    assert (table.path_of_inode(b), table.path_of_inode(x)) == ("/renamed/x", "/renamed/b")
    table.removed(a, b"b")
    assert table.path_of_inode(x) == "/renamed/b (deleted)"
    table.close()
