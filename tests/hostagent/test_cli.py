"""Start-up: runtime choice, the loud warning without isolation, and a clean shutdown."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.hostagent.conftest import needs_bwrap
from tests.support.hostagent import REPO_ROOT, start_hostagent, start_terminal
from tests.support.polling import wait_until

pytestmark = [pytest.mark.timeout(60), pytest.mark.agent]  # each test starts its agent

NO_BWRAP_PATH = {"PATH": "/nonexistent"}
AGENT = (sys.executable, "-m", "hostagent")


async def _runtime(address: str) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.HostAgentStub(channel)
        response = await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id="probe"))
        runtime: str = response.sandbox.runtime
        return runtime


async def test_auto_picks_oci_when_it_works(tmp_path: Path) -> None:
    agent = start_hostagent(tmp_path / "agent")
    try:
        assert await _runtime(agent.address) == "oci"
        assert f"hostagent listening on {agent.address} (runtime=oci)" in agent.log()
        assert "UNAVAILABLE" not in agent.log()
    finally:
        agent.stop()


@needs_bwrap
async def test_auto_without_runc_falls_back_to_bwrap_naming_what_is_lost(tmp_path: Path) -> None:
    # A PATH with bwrap on it and no runc: the host that has not installed the OCI runtime.
    only_bwrap = tmp_path / "bin"
    only_bwrap.mkdir()
    (only_bwrap / "bwrap").symlink_to(shutil.which("bwrap") or "bwrap")
    agent = start_hostagent(tmp_path / "agent", env={"PATH": str(only_bwrap)})
    try:
        assert await _runtime(agent.address) == "bwrap"
        log = agent.log()
        assert "WARNING" in log
        assert "THE OCI RUNTIME IS UNAVAILABLE (runc is not installed (Debian package runc))" in log
        assert "NO network of their own" in log
        assert "NO memory, CPU, process or disk limits" in log
    finally:
        agent.stop()


async def test_auto_without_bwrap_falls_back_with_a_loud_warning(tmp_path: Path) -> None:
    agent = start_hostagent(tmp_path / "agent", env=NO_BWRAP_PATH)
    try:
        assert await _runtime(agent.address) == "process"
        assert "WARNING" in agent.log()
        assert "ISOLATES NOTHING" in agent.log()
    finally:
        agent.stop()


def test_explicit_bwrap_without_bwrap_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [*AGENT, "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path), "--runtime", "bwrap"],
        cwd=REPO_ROOT,
        env={**os.environ, **NO_BWRAP_PATH},
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert b"the bwrap runtime cannot work here: bwrap is not on PATH" in result.stderr


def test_explicit_oci_without_runc_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [*AGENT, "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path), "--runtime", "oci"],
        cwd=REPO_ROOT,
        env={**os.environ, **NO_BWRAP_PATH},
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert b"the OCI runtime cannot work here: runc is not installed (Debian package runc)" in result.stderr


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


async def test_sigterm_kills_every_session(tmp_path: Path) -> None:
    agent = start_hostagent(tmp_path / "agent", runtime="process")
    try:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = pb_grpc.HostAgentStub(channel)
            await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id="doomed"))
            terminal, started = await start_terminal(stub, "doomed", "/bin/sh", "-c", "echo up; sleep 1000")
            await terminal.expect(b"up")
            agent.stop()
            assert agent.proc.returncode == 0
            assert await terminal.wait_exit() == 137
    finally:
        agent.stop()
    await wait_until(lambda: not _alive(started.pid))


def test_a_second_agent_on_a_taken_address_refuses_to_start(tmp_path: Path) -> None:
    first = start_hostagent(tmp_path / "first", runtime="process")
    try:
        result = subprocess.run(
            [*AGENT, "--listen", first.address, "--data-dir", str(tmp_path / "b"), "--runtime", "process"],
            cwd=REPO_ROOT,
            capture_output=True,
            timeout=30,
        )
    finally:
        first.stop()
    assert result.returncode == 1
    assert b"hostagent cannot start" in result.stderr
