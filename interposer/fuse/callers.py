"""Caller identity beyond what FUSE gives: the command name of a pid."""

from __future__ import annotations

from collections import OrderedDict


class ProcessNames:
    """pid -> command name, read once from /proc and kept in a bounded LRU."""

    def __init__(self, capacity: int = 4096) -> None:
        self._names: OrderedDict[int, str] = OrderedDict()
        self._capacity = capacity

    def __getitem__(self, pid: int) -> str:
        name = self._names.get(pid)
        if name is not None:
            self._names.move_to_end(pid)
            return name
        try:
            with open(f"/proc/{pid}/comm") as handle:
                name = handle.read().strip()
        except OSError:
            name = "" if pid else "kernel"
        self._names[pid] = name
        if len(self._names) > self._capacity:
            self._names.popitem(last=False)
        return name
