"""Kernel keys and the OCI runtime: a capsule's terminals charge none to its uids.

The kernel allows each host uid kernel.keys.maxkeys keys (200 by default); a session keyring per
`runc exec` would be charged to the capsule's root uid and refuse its 199th terminal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hostagent.oci import UID_RANGE
from tests.hostagent.conftest import CapsuleFactory, capsule_dir
from tests.support.hostagent import HostAgentProcess, Terminal, start_terminal

pytestmark = pytest.mark.timeout(120)


def keys_of_uids(first: int, count: int) -> dict[int, int]:
    """Keys held per host uid in [first, first + count), from /proc/key-users."""
    held = {}
    for line in Path("/proc/key-users").read_text().splitlines():
        uid, _, rest = line.partition(":")
        if first <= int(uid) < first + count:
            held[int(uid)] = int(rest.split()[0])
    return held


def host_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


async def test_terminals_charge_no_keys_to_the_capsules_uids(
    oci_stub: Any, oci_agent: HostAgentProcess, oci_capsules: CapsuleFactory
) -> None:
    capsule = await oci_capsules()
    base = host_uid(int((capsule_dir(oci_agent, capsule) / "init.pid").read_text()))
    terminals: list[Terminal] = []
    try:
        for user in ("root", "user", "user"):
            terminal, _ = await start_terminal(oci_stub, capsule, "/bin/sh", user=user)
            await terminal.send(b"echo READY-$((40+2))\n")
            await terminal.expect(b"READY-42")
            terminals.append(terminal)

        assert keys_of_uids(base, UID_RANGE) == {}
    finally:
        for terminal in terminals:
            await terminal.kill()
