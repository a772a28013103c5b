"""Heartbeats carry each capsule's resource readings, read from its own cgroup and disk image: CPU
time grows while it computes, memory while it holds an allocation, disk while it writes. A runtime
with no cgroup per capsule reports none of them rather than zeros."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.hostagent.test_heartbeat import TOKEN, ControlPlane, _start_agent
from tests.support.hostagent import free_port, start_hostagent, start_terminal

pytestmark = [pytest.mark.timeout(120), pytest.mark.agent]  # each test starts its agent

MIB = 1024 * 1024
READINGS = ("cpu_usec", "mem_bytes", "disk_bytes")


@pytest.fixture
def control_plane() -> Iterator[ControlPlane]:
    plane = ControlPlane(port=free_port())
    plane.start()
    yield plane
    plane.stop()


async def _reading_of(
    plane: ControlPlane, sandbox_id: str, until: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The capsule's entry of the first heartbeat from now on for which `until` holds."""
    while True:
        beat = await asyncio.to_thread(plane.next_beat)
        entry = next((s for s in beat.body.get("sandboxes", []) if s["id"] == sandbox_id), None)
        if entry is not None and until(entry):
            return entry


async def test_an_oci_capsule_reports_cpu_memory_and_disk_from_its_own_cgroup_and_image(
    tmp_path: Path, control_plane: ControlPlane
) -> None:
    control_plane.answer = {"host_id": "host-1", "interval": 0.2}
    env = {"HOSTAGENT_REGISTER_TOKEN": TOKEN, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    agent = start_hostagent(
        tmp_path / "agent", runtime="oci", env=env, args=["--control-plane", control_plane.url]
    )
    try:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = pb_grpc.HostAgentStub(channel)
            request = pb.CreateSandboxRequest(
                sandbox_id="cl-readings", vcpus=1, memory_mb=256, disk_size_mb=128
            )
            await stub.CreateSandbox(request, timeout=30)
            before = await _reading_of(control_plane, "cl-readings", lambda s: all(k in s for k in READINGS))
            # Bounded work: about a second of busy loop, 50 MiB held, 20 MiB written and synced.
            script = (
                "import os, time\n"
                "end = time.process_time() + 1.0\n"
                "while time.process_time() < end: pass\n"
                "held = bytearray(50 * 1024 * 1024)\n"
                "for i in range(0, len(held), 4096): held[i] = 1\n"
                "with open(os.path.expanduser('~/written'), 'wb') as f:\n"
                "    f.write(os.urandom(20 * 1024 * 1024)); f.flush(); os.fsync(f.fileno())\n"
                "print('holding', flush=True)\n"
                "time.sleep(3600)\n"
            )
            holder, _ = await start_terminal(stub, "cl-readings", "/usr/bin/python3", "-c", script)
            await holder.expect(b"holding")
            after = await _reading_of(
                control_plane,
                "cl-readings",
                lambda s: (
                    s["mem_bytes"] >= before["mem_bytes"] + 40 * MIB
                    and s["disk_bytes"] >= before["disk_bytes"] + 15 * MIB
                ),
            )
            assert after["cpu_usec"] - before["cpu_usec"] >= 800_000
            await holder.kill()
            await stub.DestroySandbox(pb.DestroySandboxRequest(sandbox_id="cl-readings"), timeout=30)
    finally:
        agent.stop()


async def test_a_runtime_without_cgroups_reports_no_readings(
    tmp_path: Path, control_plane: ControlPlane
) -> None:
    control_plane.answer = {"host_id": "host-1", "interval": 0.1}
    agent = _start_agent(tmp_path, control_plane)
    try:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = pb_grpc.HostAgentStub(channel)
            await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id="cl-plain"), timeout=30)
            entry = await _reading_of(control_plane, "cl-plain", lambda s: True)
    finally:
        agent.stop()
    assert [key for key in READINGS if key in entry] == []
