"""Heartbeats: the agent reports itself to the control plane, and survives it being away."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

from hostagent import __version__
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.support.hostagent import REPO_ROOT, HostAgentProcess, free_port, start_hostagent, start_terminal

pytestmark = [pytest.mark.timeout(60), pytest.mark.agent]  # each test starts its agent

TOKEN = f"hrt_{secrets.token_hex(16)}"
# Against hangs only: every wait ends as soon as what it waits for happens.
WAIT = 30.0


@dataclass
class Beat:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class ControlPlane:
    """A stand-in for the control plane's heartbeat endpoint, answering `status` and `answer`."""

    port: int
    status: int = 200
    answer: dict[str, Any] = field(default_factory=lambda: {"host_id": "host-1"})
    headers: dict[str, str] = field(default_factory=dict)
    beats: queue.Queue[Beat] = field(default_factory=queue.Queue)
    # Anything but a heartbeat POST.
    strays: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        plane = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                plane.beats.put(Beat(self.path, dict(self.headers.items()), json.loads(body)))
                payload = json.dumps(plane.answer).encode()
                self.send_response(plane.status)
                for name, value in plane.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                plane.strays.append(f"GET {self.path} {self.headers.get('Authorization')}")
                self.send_error(404)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def next_beat(self) -> Beat:
        return self.beats.get(timeout=WAIT)


@pytest.fixture
def control_plane() -> Iterator[ControlPlane]:
    plane = ControlPlane(port=free_port())
    plane.start()
    yield plane
    plane.stop()


def _start_agent(tmp_path: Path, plane: ControlPlane, *args: str) -> HostAgentProcess:
    # DEBUG shows every failed attempt, so tests can count them.
    env = {"HOSTAGENT_REGISTER_TOKEN": TOKEN, "HOSTAGENT_LOG_LEVEL": "DEBUG"}
    env |= {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    return start_hostagent(
        tmp_path / "agent", runtime="process", env=env, args=["--control-plane", plane.url, *args]
    )


@pytest.fixture
def agent_dir(tmp_path: Path) -> Path:
    return tmp_path


def _wait_for_log(agent: HostAgentProcess, text: str, times: int = 1) -> str:
    deadline = time.monotonic() + WAIT
    while agent.log().count(text) < times:
        assert time.monotonic() < deadline, f"{text!r} not logged {times} times:\n{agent.log()}"
        time.sleep(0.05)
    return agent.log()


def _lines(log: str, text: str) -> list[str]:
    return [line for line in log.splitlines() if text in line]


def test_heartbeats_carry_the_token_and_describe_the_host(
    agent_dir: Path, control_plane: ControlPlane
) -> None:
    agent = _start_agent(agent_dir, control_plane, "--advertise", "10.1.2.3:50071")
    try:
        beat = control_plane.next_beat()
    finally:
        agent.stop()
    assert beat.path == "/v1/hosts/heartbeat"
    assert beat.headers["Authorization"] == f"Bearer {TOKEN}"
    assert beat.headers["Content-Type"] == "application/json"
    assert beat.body["address"] == "10.1.2.3:50071"
    assert beat.body["runtime"] == "process"
    assert beat.body["version"] == __version__
    assert beat.body["capacity"]["vcpus"] == os.cpu_count()
    assert beat.body["capacity"]["memory_mb"] > 0
    assert beat.body["sandboxes"] == []
    assert TOKEN not in agent.log()
    # runtime=process isolates nothing, and says so part by part, with the reason.
    isolation = beat.body["isolation"]
    assert set(isolation) == {"runtime", "network", "limits", "seccomp"}
    assert all(part["on"] is False for part in isolation.values())
    assert "runtime=process was asked for" in isolation["network"]["reason"]


def test_an_oci_host_reports_every_part_of_its_isolation_on(
    agent_dir: Path, control_plane: ControlPlane
) -> None:
    env = {"HOSTAGENT_REGISTER_TOKEN": TOKEN, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    agent = start_hostagent(
        agent_dir / "agent", runtime="oci", env=env, args=["--control-plane", control_plane.url]
    )
    try:
        beat = control_plane.next_beat()
    finally:
        agent.stop()
    assert beat.body["runtime"] == "oci"
    isolation = beat.body["isolation"]
    assert {name: part["on"] for name, part in isolation.items()} == {
        "runtime": True,
        "network": True,
        "limits": True,
        "seccomp": True,
    }
    assert "system calls denied" in isolation["seccomp"]["reason"]


def test_the_address_defaults_to_the_listen_address(agent_dir: Path, control_plane: ControlPlane) -> None:
    agent = _start_agent(agent_dir, control_plane)
    try:
        assert control_plane.next_beat().body["address"] == agent.address
    finally:
        agent.stop()


async def test_heartbeats_report_each_sandbox_state_and_sessions(
    agent_dir: Path, control_plane: ControlPlane
) -> None:
    control_plane.answer = {"host_id": "host-1", "interval": 0.1}
    agent = _start_agent(agent_dir, control_plane)
    try:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = pb_grpc.HostAgentStub(channel)
            await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id="cl-beating"), timeout=30)
            await start_terminal(stub, "cl-beating", "/bin/cat", tag="pty-beating1")
            await stub.PauseSandbox(pb.PauseSandboxRequest(sandbox_id="cl-beating"), timeout=30)
            expected = [
                {
                    "id": "cl-beating",
                    "state": "paused",
                    "pty_sessions": 1,
                    "oom_kills": 0,
                    "pty_tags": ["pty-beating1"],
                }
            ]
            while (await asyncio.to_thread(control_plane.next_beat)).body["sandboxes"] != expected:
                pass
    finally:
        agent.stop()
    assert "registered with the control plane" in agent.log()
    assert "as host host-1" in agent.log()


async def test_heartbeats_list_only_the_live_sessions_tags(
    agent_dir: Path, control_plane: ControlPlane
) -> None:
    control_plane.answer = {"host_id": "host-1", "interval": 0.1}
    agent = _start_agent(agent_dir, control_plane)
    try:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = pb_grpc.HostAgentStub(channel)
            await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id="cl-tags"), timeout=30)
            await start_terminal(stub, "cl-tags", "/bin/cat", tag="pty-stays")
            quitting, _ = await start_terminal(stub, "cl-tags", "/bin/sh", "-c", "read line", tag="pty-quits")
            await quitting.send(b"bye\n")
            assert await quitting.wait_exit() == 0
            # The exited session is kept a minute for late attaches, but is not live.
            expected = [{"id": "cl-tags", "pty_sessions": 1, "pty_tags": ["pty-stays"]}]
            fields = ("id", "pty_sessions", "pty_tags")
            while True:
                sandboxes = (await asyncio.to_thread(control_plane.next_beat)).body["sandboxes"]
                if [{key: sandbox[key] for key in fields} for sandbox in sandboxes] == expected:
                    break
    finally:
        agent.stop()


def test_the_interval_from_the_answer_is_used(agent_dir: Path, control_plane: ControlPlane) -> None:
    control_plane.answer = {"host_id": "host-1", "interval": 0.2}
    # Without the answer's interval the second heartbeat would come after an hour.
    agent = _start_agent(agent_dir, control_plane, "--heartbeat-interval", "3600")
    try:
        for _ in range(3):
            control_plane.next_beat()
    finally:
        agent.stop()
    assert "heartbeat interval is now 0.2s" in agent.log()


def test_an_insane_interval_is_ignored(agent_dir: Path, control_plane: ControlPlane) -> None:
    control_plane.answer = {"host_id": "host-1", "interval": 0.001}
    agent = _start_agent(agent_dir, control_plane, "--heartbeat-interval", "0.2")
    try:
        for _ in range(3):
            control_plane.next_beat()
    finally:
        agent.stop()
    assert "heartbeat interval is now" not in agent.log()


def test_a_refused_token_is_logged_as_an_error_once(agent_dir: Path, control_plane: ControlPlane) -> None:
    control_plane.status = 401
    control_plane.answer = {"detail": "unknown host token"}
    agent = _start_agent(agent_dir, control_plane, "--heartbeat-interval", "0.1")
    try:
        log = _wait_for_log(agent, "heartbeat attempt failed: HTTP 401", times=3)
    finally:
        agent.stop()
    [line] = _lines(log, "refused this host's register token")  # once for the whole streak
    assert " ERROR " in line
    assert "HTTP 401" in line
    assert TOKEN not in agent.log()


def test_a_redirect_is_not_followed(agent_dir: Path, control_plane: ControlPlane) -> None:
    control_plane.status = 302
    control_plane.headers = {"Location": "/elsewhere"}
    agent = _start_agent(agent_dir, control_plane, "--heartbeat-interval", "0.1")
    try:
        log = _wait_for_log(agent, "heartbeat attempt failed: HTTP 302", times=2)
    finally:
        agent.stop()
    assert control_plane.strays == []
    [warning] = _lines(log, "WARNING hostagent.heartbeat")
    assert "HTTP 302" in warning


async def test_the_agent_serves_while_the_control_plane_is_down(agent_dir: Path) -> None:
    plane = ControlPlane(port=free_port())  # nothing listens there yet
    agent = _start_agent(agent_dir, plane, "--heartbeat-interval", "0.1")
    try:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = pb_grpc.HostAgentStub(channel)
            created = await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id="cl-alone"), timeout=30)
            assert created.sandbox.state == "running"
        await asyncio.to_thread(_wait_for_log, agent, "heartbeat attempt failed", 3)
        plane.start()
        try:
            assert (await asyncio.to_thread(plane.next_beat)).body["sandboxes"][0]["id"] == "cl-alone"
            log = await asyncio.to_thread(_wait_for_log, agent, "work again")
        finally:
            plane.stop()
    finally:
        agent.stop()
    [failure] = _lines(log, "WARNING hostagent.heartbeat")  # once for the whole streak
    assert "cannot reach the control plane" in failure


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--control-plane", "http://127.0.0.1:9"], "--control-plane needs the host's register token"),
        (["--control-plane", "ftp://example.org"], "--control-plane must be an http:// or https:// URL"),
        (["--heartbeat-interval", "0"], "--heartbeat-interval must be a positive number of seconds"),
    ],
)
def test_bad_heartbeat_options_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTAGENT_")}
    result = subprocess.run(
        [sys.executable, "-m", "hostagent", "--data-dir", str(tmp_path), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr.decode()
