"""The host's process table from /proc: who is whose child, session and process group."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Proc:
    pid: int
    state: str
    ppid: int
    pgid: int
    sid: int


def process_table() -> dict[int, Proc]:
    table: dict[int, Proc] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat_file:
                stat = stat_file.read()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may contain spaces.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 3:
            pid = int(name)
            table[pid] = Proc(pid, fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]))
    return table


def session_members(sid: int, table: dict[int, Proc] | None = None) -> list[int]:
    """Host pids whose session id or process group is `sid`."""
    table = process_table() if table is None else table
    return [p.pid for p in table.values() if sid in (p.sid, p.pgid)]


def process_trees(leaders: Iterable[int], table: dict[int, Proc] | None = None) -> list[int]:
    """The leaders, their session members and all their descendants, parents before children."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)

    def closure(roots: Iterable[int]) -> set[int]:
        found: set[int] = set()
        stack = list(roots)
        while stack:
            pid = stack.pop()
            if pid not in found:
                found.add(pid)
                stack.extend(children.get(pid, ()))
        return found

    live = [pid for pid in leaders if pid in table]
    # Orphans of a session (reparented to init) are still its members.
    members = closure([*live, *(m for pid in live for m in session_members(pid, table))])
    ordered = sorted(pid for pid in members if table[pid].ppid not in members)
    for pid in ordered:  # breadth first: the list grows while it is walked
        ordered.extend(sorted(children.get(pid, ())))
    return ordered


def state_of(pid: int) -> str | None:
    """The one-letter /proc state of `pid`, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()
