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


# Bytes of a process's arguments a listing reads.
ARGV_MAX = 4096


@dataclass(frozen=True)
class ProcessView:
    """A process as its capsule sees it: pids in the capsule's pid namespace (where it has one)."""

    host_pid: int
    pid: int
    ppid: int
    state: str
    argv: list[str]


def namespace_pid(host_pid: int) -> int | None:
    """`host_pid` as the innermost pid namespace of the process sees it (its NSpid's last
    field); None once it is gone."""
    try:
        with open(f"/proc/{host_pid}/status", "rb") as status_file:
            for line in status_file:
                if line.startswith(b"NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return host_pid  # a kernel without NSpid: no pid namespaces to translate


def _argv(host_pid: int) -> list[str]:
    """The process's arguments, their first ARGV_MAX bytes: a capsule's processes choose their
    own (megabytes each, by the thousand), and a listing must not cost the agent that much."""
    try:
        with open(f"/proc/{host_pid}/cmdline", "rb") as cmdline_file:
            raw = cmdline_file.read(ARGV_MAX + 1)
    except OSError:
        return []
    parts = raw[:ARGV_MAX].split(b"\0")
    if len(raw) <= ARGV_MAX:
        parts = parts[:-1]  # the terminating NUL
    return [part.decode(errors="replace") for part in parts]


def describe_processes(host_pids: Iterable[int], inner: bool) -> list[ProcessView]:
    """The processes (those still there), with pids as their capsule sees them when `inner`
    (one pid namespace of its own), else the host's; a parent outside the capsule is 0."""
    table = process_table()
    pids = [pid for pid in host_pids if pid in table]
    visible = {pid: (namespace_pid(pid) if inner else pid) for pid in pids}
    views = []
    for pid in pids:
        seen = visible[pid]
        if seen is None:
            continue
        parent = visible.get(table[pid].ppid) or 0
        views.append(ProcessView(pid, seen, parent, table[pid].state, _argv(pid)))
    return sorted(views, key=lambda view: view.pid)
