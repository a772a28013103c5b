"""What a capsule uses right now, as the heartbeat reports it: CPU time since its cgroup was made,
memory in use, and the host disk its sparse image takes.

A reading the runtime cannot give is None and left out of the report (plain processes and bwrap
have no cgroup per capsule; a capsule without a disk image has no disk of its own), so that the
control plane shows "not measured" instead of a made-up zero.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from hostagent.freezer import _mounts


@dataclass(frozen=True)
class Readings:
    # Microseconds of CPU time the capsule's processes used, cumulative.
    cpu_usec: int | None = None
    mem_bytes: int | None = None
    disk_bytes: int | None = None

    def report(self) -> dict[str, int]:
        """The readings that were taken, as heartbeat fields."""
        fields = {"cpu_usec": self.cpu_usec, "mem_bytes": self.mem_bytes, "disk_bytes": self.disk_bytes}
        return {name: value for name, value in fields.items() if value is not None}


def _read_int(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


def _v2_usage_usec(cpu_stat: Path) -> int | None:
    with contextlib.suppress(OSError):
        for line in cpu_stat.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec" and value.strip().isdigit():
                return int(value)
    return None


def cgroup_readings(cgroup_root: str, sandbox_id: str, version: str) -> tuple[int | None, int | None]:
    """(CPU microseconds, memory bytes) of the cgroup `<hierarchy>/<cgroup_root>/<sandbox_id>` that
    runc made, on the hierarchy that carries the memory controller (`version`, as
    `hostagent.oci.cgroup_version` tells it); (None, None) where there is none. Blocking."""
    cpu = memory = None
    for mount, fstype, options in _mounts():
        cgroup = Path(mount) / cgroup_root / sandbox_id
        if version == "cgroup2" and fstype == "cgroup2":
            cpu, memory = _v2_usage_usec(cgroup / "cpu.stat"), _read_int(cgroup / "memory.current")
        elif version == "cgroup1" and fstype == "cgroup":
            if "cpuacct" in options and cpu is None:
                nanoseconds = _read_int(cgroup / "cpuacct.usage")
                cpu = None if nanoseconds is None else nanoseconds // 1000
            if "memory" in options and memory is None:
                memory = _read_int(cgroup / "memory.usage_in_bytes")
    return cpu, memory
