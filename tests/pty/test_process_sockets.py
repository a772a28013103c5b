"""The exec and process sockets through the real ASGI application and a real host agent: Wrenn's
frames, resume by offset, stop, and every refusal, from the client's side and a hostile one's."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from capsules.models import Sandbox
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.pty.conftest import Open
from tests.support.polling import wait_until

pytestmark = pytest.mark.timeout(60)


def key_headers(api_key: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-api-key", api_key.encode())]


async def frames_until_closed(socket: Any, limit: int = 500) -> list[dict[str, Any]]:
    """Every frame the server sends until it closes the socket."""
    frames: list[dict[str, Any]] = []
    for _ in range(limit):
        message = await socket.receive_output(timeout=30)
        if message["type"] == "websocket.close":
            return frames
        frames.append(json.loads(message["text"]))
    raise AssertionError(f"no close after {limit} frames: {frames[-5:]}")


async def exec_frames(open_socket: Open, capsule: Sandbox, api_key: str, start: dict[str, Any]) -> list[Any]:
    socket = await open_socket(f"/v1/capsules/{capsule.pk}/exec/stream", key_headers(api_key), [])
    await socket.send_to(text_data=json.dumps({"type": "start", **start}))
    return await frames_until_closed(socket)


def text_of(frames: list[dict[str, Any]], kind: str) -> str:
    return "".join(frame["data"] for frame in frames if frame["type"] == kind)


def agent_stub(capsule: Sandbox) -> Any:
    assert capsule.host is not None
    return pb_grpc.HostAgentStub(grpc.aio.insecure_channel(capsule.host.address))


async def test_exec_streams_start_stdout_stderr_and_exit(
    open_socket: Open, capsule: Sandbox, api_key: str
) -> None:
    frames = await exec_frames(
        open_socket, capsule, api_key, {"cmd": "/bin/sh", "args": ["-c", "echo out; echo err >&2; exit 6"]}
    )
    assert frames[0]["type"] == "start"
    assert frames[0]["pid"] > 0
    assert text_of(frames, "stdout") == "out\n"
    assert text_of(frames, "stderr") == "err\n"
    assert frames[-1] == {"type": "exit", "exit_code": 6}


async def test_a_character_split_across_output_chunks_arrives_whole(
    open_socket: Open, capsule: Sandbox, api_key: str
) -> None:
    # 'é' is two bytes; the first is written, then the second a moment later.
    frames = await exec_frames(
        open_socket,
        capsule,
        api_key,
        {"cmd": "/bin/sh", "args": ["-c", "printf '\\303'; sleep 0.2; printf '\\251!'"]},
    )
    assert text_of(frames, "stdout") == "é!"
    assert "\ufffd" not in text_of(frames, "stdout")


async def test_output_frames_carry_their_byte_range(
    open_socket: Open, capsule: Sandbox, api_key: str
) -> None:
    frames = await exec_frames(
        open_socket, capsule, api_key, {"cmd": "/bin/sh", "args": ["-c", "echo a; sleep 0.1; echo bb >&2"]}
    )
    output = [frame for frame in frames if frame["type"] in ("stdout", "stderr")]
    assert [(f["offset"], f["end"]) for f in output] == [(0, 2), (2, 5)]


async def test_stop_kills_the_process_group(open_socket: Open, capsule: Sandbox, api_key: str) -> None:
    socket = await open_socket(f"/v1/capsules/{capsule.pk}/exec/stream", key_headers(api_key), [])
    await socket.send_to(
        text_data=json.dumps({"type": "start", "cmd": "/bin/sh", "args": ["-c", "echo up; sleep 60"]})
    )
    assert json.loads(await socket.receive_from(timeout=30))["type"] == "start"
    assert json.loads(await socket.receive_from(timeout=30))["data"] == "up\n"
    await socket.send_to(text_data=json.dumps({"type": "stop"}))
    frames = await frames_until_closed(socket)
    assert frames[-1] == {"type": "exit", "exit_code": 137}


async def test_closing_an_exec_socket_kills_its_command(
    open_socket: Open, capsule: Sandbox, api_key: str
) -> None:
    socket = await open_socket(f"/v1/capsules/{capsule.pk}/exec/stream", key_headers(api_key), [])
    start = {"type": "start", "cmd": "sleep", "args": ["4711"]}
    await socket.send_to(text_data=json.dumps(start))
    assert json.loads(await socket.receive_from(timeout=30))["type"] == "start"
    await socket.disconnect()
    stub = agent_stub(capsule)

    async def gone() -> bool:
        listed = await stub.ListProcesses(pb.ListProcessesRequest(sandbox_id=capsule.pk), timeout=10)
        return not any(p.args == ["4711"] for p in listed.processes)

    await wait_until(gone, within=15)


async def test_a_process_socket_attaches_by_tag_or_pid_and_resumes_from_an_offset(
    open_socket: Open, capsule: Sandbox, api_key: str
) -> None:
    stub = agent_stub(capsule)
    request = pb.ProcessStartRequest(
        sandbox_id=capsule.pk,
        tag="proc-attach01",
        cmd="/bin/sh",
        args=["-c", "echo one; echo two; read x < /dev/null; sleep 1; echo three"],
        background=True,
    )
    events = [event async for event in stub.ProcessStart(request, timeout=10)]
    started = events[0].started
    by_offset = await open_socket(
        f"/v1/capsules/{capsule.pk}/processes/proc-attach01/stream?offset=4", key_headers(api_key), []
    )
    frames = await frames_until_closed(by_offset)
    assert frames[0] == {"type": "start", "pid": started.pid, "tag": "proc-attach01"}
    assert text_of(frames, "stdout") == "two\nthree\n"
    assert frames[-1] == {"type": "exit", "exit_code": 0}
    # After the exit, for a while: the exit code, by pid too.
    by_pid = await open_socket(
        f"/v1/capsules/{capsule.pk}/processes/{started.pid}/stream", key_headers(api_key), []
    )
    assert (await frames_until_closed(by_pid))[-1] == {"type": "exit", "exit_code": 0}


async def test_closing_a_process_socket_leaves_the_process_running(
    open_socket: Open, capsule: Sandbox, api_key: str
) -> None:
    stub = agent_stub(capsule)
    request = pb.ProcessStartRequest(
        sandbox_id=capsule.pk, tag="proc-keep0001", cmd="sleep", args=["60"], background=True
    )
    _ = [event async for event in stub.ProcessStart(request, timeout=10)]
    socket = await open_socket(
        f"/v1/capsules/{capsule.pk}/processes/proc-keep0001/stream", key_headers(api_key), []
    )
    assert json.loads(await socket.receive_from(timeout=30))["type"] == "start"
    await socket.disconnect()
    listed = await stub.ListProcesses(pb.ListProcessesRequest(sandbox_id=capsule.pk), timeout=10)
    assert any(p.tag == "proc-keep0001" for p in listed.processes)
    await stub.SignalProcess(pb.SignalProcessRequest(sandbox_id=capsule.pk, tag="proc-keep0001"), timeout=10)


@pytest.mark.parametrize(
    ("start", "message"),
    [
        ({}, "start: cmd must be a non-empty string"),
        ({"cmd": "true", "args": "x"}, "start: args must be a list of strings"),
        ({"cmd": "true", "envs": {"A": 1}}, "start: envs must be an object of strings"),
        ({"cmd": "true", "cwd": 5}, "start: cwd must be a string"),
        ({"cmd": "true", "tag": "../x"}, "invalid tag"),
        ({"cmd": "true", "timeout_sec": -1}, "start: timeout_sec must be an integer"),
        ({"cmd": "/no/such/program"}, "cannot start '/no/such/program'"),
    ],
)
async def test_a_bad_start_is_refused_with_what_is_wrong(
    open_socket: Open, capsule: Sandbox, api_key: str, start: dict[str, Any], message: str
) -> None:
    frames = await exec_frames(open_socket, capsule, api_key, start)
    assert frames[-1]["type"] == "error"
    assert message in frames[-1]["data"]


async def test_frames_that_are_not_the_protocol_get_errors_and_lose_nothing(
    open_socket: Open, capsule: Sandbox, api_key: str
) -> None:
    socket = await open_socket(f"/v1/capsules/{capsule.pk}/exec/stream", key_headers(api_key), [])
    await socket.send_to(text_data="{nope")
    assert json.loads(await socket.receive_from(timeout=10))["data"].startswith("invalid JSON")
    await socket.send_to(bytes_data=b"\x00\x01")
    assert "binary frames" in json.loads(await socket.receive_from(timeout=10))["data"]
    await socket.send_to(text_data=json.dumps(["start"]))
    assert '"type"' in json.loads(await socket.receive_from(timeout=10))["data"]
    await socket.send_to(text_data=json.dumps({"type": "input", "data": "x"}))
    assert "start" in json.loads(await socket.receive_from(timeout=10))["data"]
    # The socket still takes its start.
    await socket.send_to(text_data=json.dumps({"type": "start", "cmd": "echo", "args": ["still here"]}))
    frames = await frames_until_closed(socket)
    assert text_of(frames, "stdout") == "still here\n"
    assert frames[-1]["type"] == "exit"


async def test_refusals_before_anything_runs(
    open_socket: Open, capsule: Sandbox, other_capsule: Sandbox, api_key: str
) -> None:
    cases = [
        (f"/v1/capsules/{capsule.pk}/exec/stream", [], "missing credentials"),
        (f"/v1/capsules/{capsule.pk}/exec/stream", key_headers("wrn_not_a_key"), "invalid API key"),
        (f"/v1/capsules/{other_capsule.pk}/exec/stream", key_headers(api_key), "not found"),
        (f"/v1/capsules/{other_capsule.pk}/processes/1/stream", key_headers(api_key), "not found"),
        (f"/v1/capsules/{capsule.pk}/processes/proc-missing0/stream", key_headers(api_key), "not found"),
        (f"/v1/capsules/{capsule.pk}/processes/007/stream", key_headers(api_key), "leading zeros"),
        (f"/v1/capsules/{capsule.pk}/processes/x/stream?offset=-1", key_headers(api_key), "invalid offset"),
    ]
    for path, headers, message in cases:
        socket = await open_socket(path, headers, [])
        frames = await frames_until_closed(socket)
        assert frames[-1]["type"] == "error", path
        assert message in frames[-1]["data"], (path, frames)


async def test_a_paused_capsule_refuses_exec(open_socket: Open, capsule: Sandbox, api_key: str) -> None:
    await Sandbox.objects.filter(pk=capsule.pk).aupdate(status=Sandbox.Status.PAUSED)
    socket = await open_socket(f"/v1/capsules/{capsule.pk}/exec/stream", key_headers(api_key), [])
    frames = await frames_until_closed(socket)
    assert frames == [{"type": "error", "data": "capsule is paused; cannot run a command"}]
