"""Reading ``/proc/<pid>/stat``: what identifies a process or thread, and whether it still runs.

A pid is reused once its process is gone, so the driver (its volume servers)
and the tracing layer (its callers) both name a process by its pid *and* its
start time, which no later process with the same pid can share.
"""

from __future__ import annotations

_STATE_FIELD = 0
_STARTTIME_FIELD = 19
"""Indexes of ``state`` and ``starttime`` (fields 3 and 22 of proc_pid_stat(5)) after the command's ')'."""


def stat_fields(pid: int) -> list[bytes]:
    """The fields after the command name, which may itself hold spaces and parentheses; OSError if gone."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        stat = handle.read()
    return stat[stat.rindex(b")") + 2 :].split()


def start_time(pid: int) -> int:
    """A process's or thread's start time in clock ticks since boot; OSError if it is gone."""
    return int(stat_fields(pid)[_STARTTIME_FIELD])


def running_start_time(pid: int) -> int | None:
    """The start time of a process that still runs; None for one that is gone or a zombie."""
    try:
        fields = stat_fields(pid)
    except OSError:
        return None
    return None if fields[_STATE_FIELD] == b"Z" else int(fields[_STARTTIME_FIELD])
