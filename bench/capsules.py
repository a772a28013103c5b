"""The capsule workload: a host agent's CreateSandbox and DestroySandbox, timed over gRPC, and
what an idle capsule (and an idle terminal in it) costs the host in memory.

What is counted, per capsule, with ``capsules`` of them live and idle:
- ``capsule_pss_kib``, ``capsule_rss_kib``: the capsule's own processes (the container's init,
  tini, over `sleep infinity`), from /proc/PID/smaps_rollup of its cgroup's processes; PSS
  shares the pages of the host's libraries out among their users, RSS counts them whole;
- ``capsule_cgroup_kib``: what the kernel charges to the capsule's memory cgroup (its processes'
  pages and the kernel objects they allocated: page tables, their share of the namespaces);
  none for a runtime without a memory cgroup per capsule;
- ``capsule_agent_kib``: how much the agent's own resident memory grew;
- ``capsule_kernel_kib``: how much the host's unreclaimable kernel memory grew (/proc/meminfo's
  SUnreclaim, KernelStack, PageTables and VmallocUsed): the kernel objects of the capsule's
  processes (also in its cgroup), and those no cgroup holds: the network namespace, the veth
  pair, its nftables rules, the loop device and the mounted disk image. Host-wide, so anything
  else running on the machine moves it too;
- ``capsule_host_kib``: how much the host's MemAvailable fell, the widest figure, and the least
  stable: free pages held in per-CPU lists and whatever else the machine does move it by tens of
  MiB within the workload (see docs/performance.md).

Both host-wide figures are read once MemAvailable has stopped moving (what the previous target
freed as it stopped, what the kernel still does for new capsules).

Terminals: in ``terminals`` of the capsules, one `/bin/sh` each, timed from PtyAttach to its
first output byte (``terminal_start_*``), and the memory of its processes (the shell, and for
bubblewrap the bwrap processes around it), from the started pid down.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import grpc

from bench.targets import HostAgent
from bench.workloads import Sizes, percentile
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.support.hostagent import Terminal, start_terminal

KIB = 1024
SETTLE = 2.0  # seconds for the capsules' processes and the kernel to finish starting
CALL_TIMEOUT = 120.0
# MemAvailable counts as settled when 6 readings over 3 s span at most 1 MiB (20 KiB per capsule
# of 50); after 30 s, whatever it is.
SETTLED_READINGS = 6
SETTLED_SPAN = 1024
SETTLE_LIMIT = 30.0
# The kernel's own memory that it cannot reclaim, in /proc/meminfo.
KERNEL = ("SUnreclaim", "KernelStack", "PageTables", "VmallocUsed")


async def capsule_lifecycle(target: HostAgent, sizes: Sizes) -> dict[str, float]:
    assert target.agent is not None
    runtime = target.runtime()
    if runtime != target.agent_runtime:
        raise AssertionError(f"{target.name}: the agent runs {runtime!r}, not {target.agent_runtime!r}")
    ids = [f"cl-bench{index:04d}" for index in range(sizes.capsules)]
    async with grpc.aio.insecure_channel(target.agent.address) as channel:
        stub = pb_grpc.HostAgentStub(channel)
        before = settled_meminfo()
        agent = rss_kib(target.agent.proc.pid)
        creates = []
        for sandbox_id in ids:
            started = time.perf_counter()
            request = pb.CreateSandboxRequest(sandbox_id=sandbox_id)
            response = await stub.CreateSandbox(request, timeout=CALL_TIMEOUT)
            creates.append((time.perf_counter() - started) * 1000)
            if response.sandbox.runtime != runtime:
                raise AssertionError(f"{sandbox_id} was created by {response.sandbox.runtime!r}")
        await asyncio.sleep(SETTLE)
        live = settled_meminfo()
        figures = {
            "capsule_create_p50_ms": statistics.median(creates),
            "capsule_create_p99_ms": percentile(creates, 0.99),
            **idle_memory(target, ids, agent),
            **await terminals(stub, ids[: sizes.terminals]),
        }
        destroys = []
        for sandbox_id in ids:
            started = time.perf_counter()
            await stub.DestroySandbox(pb.DestroySandboxRequest(sandbox_id=sandbox_id), timeout=CALL_TIMEOUT)
            destroys.append((time.perf_counter() - started) * 1000)
        left = await stub.ListSandboxes(pb.ListSandboxesRequest(), timeout=CALL_TIMEOUT)
        if left.sandboxes:
            raise AssertionError(f"{target.name}: {len(left.sandboxes)} capsules outlived DestroySandbox")
    count = len(ids)
    return figures | {
        "capsule_destroy_p50_ms": statistics.median(destroys),
        "capsule_destroy_p99_ms": percentile(destroys, 0.99),
        "capsule_kernel_kib": sum(live[name] - before[name] for name in KERNEL) / count,
        "capsule_host_kib": (before["MemAvailable"] - live["MemAvailable"]) / count,
    }


def idle_memory(target: HostAgent, ids: list[str], agent: int) -> dict[str, float]:
    """Per capsule: its processes (PSS, RSS), its memory cgroup, the agent's growth."""
    assert target.agent is not None
    cgroup_root = target.agent.cgroup_root
    pss = rss = 0
    charged: list[int] = []
    for sandbox_id in ids:
        for pid in cgroup_procs(cgroup_root, sandbox_id):
            usage = smaps_rollup(pid)
            pss += usage.get("Pss", 0)
            rss += usage.get("Rss", 0)
        cgroup = memory_charge(cgroup_root, sandbox_id)
        if cgroup is not None:
            charged.append(cgroup)
    count = len(ids)
    figures = {
        "capsule_pss_kib": pss / count,
        "capsule_rss_kib": rss / count,
        "capsule_agent_kib": (rss_kib(target.agent.proc.pid) - agent) / count,
    }
    if charged:
        figures["capsule_cgroup_kib"] = sum(charged) / KIB / len(charged)
    return figures


async def terminals(stub: Any, ids: list[str]) -> dict[str, float]:
    """One idle shell in each capsule of ``ids``: time to its first byte, memory of its processes."""
    opened: list[Terminal] = []
    pids: list[int] = []
    timings = []
    try:
        for sandbox_id in ids:
            started = time.perf_counter()
            terminal, event = await start_terminal(stub, sandbox_id, "/bin/sh")
            opened.append(terminal)
            pids.append(event.pid)
            while not terminal.output:
                await terminal.next_event()
            timings.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(SETTLE)
        pss = rss = 0
        for leader in pids:
            for pid in descendants(leader):
                usage = smaps_rollup(pid)
                pss += usage.get("Pss", 0)
                rss += usage.get("Rss", 0)
    finally:
        for terminal in opened:
            await terminal.kill()
            await terminal.wait_exit()
    return {
        "terminal_start_p50_ms": statistics.median(timings),
        "terminal_pss_kib": pss / len(ids),
        "terminal_rss_kib": rss / len(ids),
    }


# What the host says


def meminfo() -> dict[str, int]:
    """/proc/meminfo, in KiB by field."""
    fields = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = int(value.split()[0])
    return fields


def settled_meminfo() -> dict[str, int]:
    """/proc/meminfo once MemAvailable has stopped moving: the first window of readings, half a
    second apart, that spans at most SETTLED_SPAN (or the last, after SETTLE_LIMIT), with the
    median of its MemAvailable readings."""
    readings: list[int] = []
    deadline = time.monotonic() + SETTLE_LIMIT
    while True:
        fields = meminfo()
        readings = [*readings[-(SETTLED_READINGS - 1) :], fields["MemAvailable"]]
        settled = len(readings) == SETTLED_READINGS and max(readings) - min(readings) <= SETTLED_SPAN
        if settled or time.monotonic() > deadline:
            return fields | {"MemAvailable": int(statistics.median(readings))}
        time.sleep(0.5)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def smaps_rollup(pid: int) -> dict[str, int]:
    """KiB by field (Rss, Pss, …); empty for a process gone since it was listed."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    fields = {}
    for line in text.splitlines()[1:]:
        name, _, value = line.partition(":")
        fields[name] = int(value.split()[0])
    return fields


def cgroup_mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fstype, options) of every cgroup hierarchy."""
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        _source, mount, fstype, options, *_ = line.split()
        if fstype in ("cgroup", "cgroup2"):
            found.append((mount, fstype, set(options.split(","))))
    return found


def cgroup_procs(cgroup_root: str, sandbox_id: str) -> list[int]:
    """The capsule's processes, as the OCI runtime lists them (`OciRuntime.procs`); none for a
    runtime whose capsules have no cgroup while idle."""
    for mount, fstype, options in cgroup_mounts():
        if (fstype == "cgroup" and "pids" in options) or fstype == "cgroup2":
            path = Path(mount) / cgroup_root / sandbox_id / "cgroup.procs"
            if path.exists():
                return [int(pid) for pid in path.read_text().split()]
    return []


def memory_charge(cgroup_root: str, sandbox_id: str) -> int | None:
    """Bytes charged to the capsule's memory cgroup (v1 memory.usage_in_bytes, v2 memory.current)."""
    for mount, fstype, options in cgroup_mounts():
        directory = Path(mount) / cgroup_root / sandbox_id
        if fstype == "cgroup" and "memory" in options:
            name = "memory.usage_in_bytes"
        elif fstype == "cgroup2":
            name = "memory.current"
        else:
            continue
        if (directory / name).exists():
            return int((directory / name).read_text())
    return None


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending += children.get(current, [])
    return found
