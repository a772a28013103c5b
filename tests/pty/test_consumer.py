"""The terminal socket through the real ASGI application, in-memory channel layer and a real host agent."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
from datetime import timedelta
from typing import Any

import grpc
import pytest
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.contrib.auth import get_user_model
from rest_framework_simplejwt.tokens import AccessToken

from capsules.models import Host, Membership, Sandbox, Team, TerminalSession
from capsules.tokens import tokens_for
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from pty.leases import local_leases
from pty.protocol import BINARY_SUBPROTOCOL, MAX_FRAME_BYTES
from pty.stream import MARK_AFTER_QUIET
from tests.pty.conftest import create_on_agent
from tests.support.hostagent import start_hostagent
from tests.support.terminal import Terminal

pytestmark = [pytest.mark.timeout(60)]


def path(capsule: Sandbox) -> str:
    return f"/v1/capsules/{capsule.id}/pty"


def key_header(api_key: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-api-key", api_key.encode())]


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


async def terminal(open_socket: Any, capsule: Sandbox, api_key: str, route: str | None = None) -> Terminal:
    return Terminal.over_communicator(await open_socket(route or path(capsule), key_header(api_key)))


async def assert_fatal(term: Terminal, message: str, capsule: Sandbox) -> None:
    """One fatal error with exactly this message, then a close that leaves nothing behind."""
    frame = await term.recv()
    assert frame == {"type": "error", "data": message, "fatal": True}
    await assert_closed_and_clean(term.communicator, capsule)


async def assert_no_sessions(capsule: Sandbox) -> None:
    """The host agent runs no terminal in the capsule."""
    async with grpc.aio.insecure_channel(capsule.host.address) as channel:  # type: ignore[union-attr]
        listing = await pb_grpc.HostAgentStub(channel).ListSandboxes(pb.ListSandboxesRequest(), timeout=10)
    counts = {sandbox.sandbox_id: sandbox.pty_sessions for sandbox in listing.sandboxes}
    assert counts.get(capsule.id, 0) == 0, counts


async def assert_closed_and_clean(communicator: Any, capsule: Sandbox) -> None:
    """The server closed the socket, kept nothing of it, and started no process."""
    assert (await communicator.receive_output(timeout=10))["type"] == "websocket.close"
    await communicator.disconnect()
    await assert_nothing_left()
    await assert_no_sessions(capsule)


async def assert_nothing_left() -> None:
    """No stream or input task, no lease and no group membership outlives the sockets."""
    for _ in range(50):
        tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("pty-")]
        layer = get_channel_layer()
        if not tasks and not layer.groups and not local_leases.held():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"left behind: tasks={tasks} groups={layer.groups} leases={local_leases.held()}")


# --- happy paths ------------------------------------------------------------------


async def test_start_gives_a_tag_and_a_shell(open_socket: Any, capsule: Sandbox, api_key: str) -> None:
    term = await terminal(open_socket, capsule, api_key)
    started = await term.start()
    assert re.fullmatch(r"pty-[0-9a-f]{8}", started["tag"])
    assert started["pid"] > 0
    await term.type("echo $((20+22))done\n")
    await term.read_until(b"42done")


async def test_same_routes_under_api_prefix(open_socket: Any, capsule: Sandbox, api_key: str) -> None:
    term = await terminal(open_socket, capsule, api_key, route=f"/api/v1/capsules/{capsule.id}/pty")
    await term.start(cmd="/bin/echo", args=["via-api"])
    await term.read_until(b"via-api")


async def test_exit_code_reaches_the_client(open_socket: Any, capsule: Sandbox, api_key: str) -> None:
    term = await terminal(open_socket, capsule, api_key)
    await term.start(cmd="/bin/sh", args=["-c", "exit 3"])
    assert (await term.expect("exit"))["exit_code"] == 3


async def test_resize_is_seen_by_stty(open_socket: Any, capsule: Sandbox, api_key: str) -> None:
    term = await terminal(open_socket, capsule, api_key)
    await term.start(cols=100, rows=30)
    await term.type("stty size; echo sized\n")
    await term.read_until(b"30 100\r\nsized")
    await term.send(type="resize", cols=132, rows=43)
    await term.type("stty size; echo resized\n")
    await term.read_until(b"43 132\r\nresized")


async def test_kill_ends_the_session(open_socket: Any, capsule: Sandbox, api_key: str) -> None:
    term = await terminal(open_socket, capsule, api_key)
    await term.start(cmd="/bin/sleep", args=["600"])
    await term.send(type="kill")
    assert (await term.expect("exit"))["exit_code"] == 137


async def test_input_keeps_its_order_and_nothing_is_dropped(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    term = await terminal(open_socket, capsule, api_key)
    await term.start(cmd="/bin/sh", args=["-c", "stty -echo; cat > /tmp/typed; echo stored"])
    lines = [f"line {i:04d}\n" for i in range(500)]
    for line in lines:  # 500 frames in a burst, with resizes in between
        await term.type(line)
        if line.endswith("0\n"):
            await term.send(type="resize", cols=81, rows=25)
    await term.type(b"\x04")
    await term.read_until(b"stored")
    check = await terminal(open_socket, capsule, api_key)
    await check.start(cmd="/bin/sh", args=["-c", "md5sum < /tmp/typed"])
    expected = hashlib.md5("".join(lines).encode()).hexdigest().encode()  # noqa: S324 - a checksum
    await check.read_until(expected)


async def test_second_socket_connects_to_the_same_session(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    first = await terminal(open_socket, capsule, api_key)
    tag = (await first.start())["tag"]
    second = await terminal(open_socket, capsule, api_key)
    await second.send(type="connect", tag=tag)
    await second.type("echo from-$((1+1))nd\n")
    await first.read_until(b"from-2nd")
    await second.read_until(b"from-2nd")


async def test_session_outlives_its_socket(open_socket: Any, capsule: Sandbox, api_key: str) -> None:
    communicator = await open_socket(path(capsule), key_header(api_key))
    first = Terminal.over_communicator(communicator)
    tag = (await first.start())["tag"]
    await first.type("export MARK=kept\n")
    await first.read_until(b"export MARK=kept")
    await communicator.disconnect()
    again = await terminal(open_socket, capsule, api_key)
    await again.send(type="connect", tag=tag)
    await again.type("echo mark-$MARK\n")
    await again.read_until(b"mark-kept")


async def test_viewer_takes_over_when_the_leader_leaves(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    communicator = await open_socket(path(capsule), key_header(api_key))
    leader = Terminal.over_communicator(communicator)
    tag = (await leader.start())["tag"]
    viewer = await terminal(open_socket, capsule, api_key)
    await viewer.send(type="connect", tag=tag)
    await viewer.type("echo one-$((0+1))\n")
    await viewer.read_until(b"one-1")
    await communicator.disconnect()
    await viewer.type("echo two-$((1+1))\n")
    await viewer.read_until(b"two-2")


async def test_last_active_at_is_updated_while_typing(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    settings.PTY_ACTIVITY_INTERVAL_SECONDS = 0
    term = await terminal(open_socket, capsule, api_key)
    await term.start()
    await term.type("echo active\n")
    await term.read_until(b"active\r\n")
    refreshed = await Sandbox.objects.aget(pk=capsule.pk)
    assert refreshed.last_active_at is not None


async def test_keepalive_ping(open_socket: Any, capsule: Sandbox, api_key: str, settings: Any) -> None:
    settings.PTY_KEEPALIVE_SECONDS = 0.2
    communicator = await open_socket(path(capsule), key_header(api_key))
    assert json.loads(await communicator.receive_from(timeout=5)) == {"type": "ping"}
    await communicator.send_to(text_data=json.dumps({"type": "pong"}))


# --- authentication ------------------------------------------------------------------


async def test_bearer_token_with_team_claim(
    open_socket: Any, capsule: Sandbox, member: Any, team: Team
) -> None:
    access = await _access_token(member, team)
    term = Terminal.over_communicator(await open_socket(path(capsule), bearer(access)))
    await term.start(cmd="/bin/echo", args=["bearer-ok"])
    await term.read_until(b"bearer-ok")


async def test_first_frame_auth_for_browsers(
    open_socket: Any, capsule: Sandbox, member: Any, team: Team
) -> None:
    term = Terminal.over_communicator(await open_socket(path(capsule)))
    await term.send(type="auth", token=await _access_token(member, team))
    await term.start(cmd="/bin/echo", args=["frame-auth-ok"])
    await term.read_until(b"frame-auth-ok")


async def test_first_frame_auth_accepts_an_api_key(open_socket: Any, capsule: Sandbox, api_key: str) -> None:
    term = Terminal.over_communicator(await open_socket(path(capsule)))
    await term.send(type="auth", token=api_key)
    await term.start(cmd="/bin/echo", args=["key-frame-ok"])
    await term.read_until(b"key-frame-ok")


async def test_no_credentials_time_out(open_socket: Any, capsule: Sandbox, settings: Any) -> None:
    settings.PTY_AUTH_TIMEOUT_SECONDS = 0.3
    term = Terminal.over_communicator(await open_socket(path(capsule)))
    await assert_fatal(term, "authentication timed out: no credentials within 0.3 seconds", capsule)


async def test_first_frame_must_be_auth_without_credentials(open_socket: Any, capsule: Sandbox) -> None:
    term = Terminal.over_communicator(await open_socket(path(capsule)))
    await term.send(type="start")
    await assert_fatal(term, 'authentication required: send {"type": "auth", "token": ...} first', capsule)


async def test_unknown_api_key(open_socket: Any, capsule: Sandbox) -> None:
    term = Terminal.over_communicator(await open_socket(path(capsule), key_header("wrn_" + "0" * 40)))
    await assert_fatal(term, "authentication failed: invalid API key", capsule)


async def test_invalid_token(open_socket: Any, capsule: Sandbox) -> None:
    term = Terminal.over_communicator(await open_socket(path(capsule), bearer("not.a.jwt")))
    await assert_fatal(term, "authentication failed: token is invalid", capsule)


async def test_expired_token(open_socket: Any, capsule: Sandbox, member: Any, team: Team) -> None:
    token = AccessToken.for_user(member)
    token["team_id"] = str(team.id)
    token.set_exp(lifetime=-timedelta(seconds=1))
    term = Terminal.over_communicator(await open_socket(path(capsule), bearer(str(token))))
    await assert_fatal(term, "authentication failed: token is expired", capsule)


async def test_token_for_a_team_the_user_left(
    open_socket: Any, capsule: Sandbox, member: Any, team: Team, other_team: Team
) -> None:
    token = AccessToken.for_user(member)
    token["team_id"] = str(other_team.id)
    term = Terminal.over_communicator(await open_socket(path(capsule), bearer(str(token))))
    await assert_fatal(term, "authentication failed: not a member of the token's team", capsule)


async def test_inactive_user_is_refused(open_socket: Any, capsule: Sandbox, member: Any, team: Team) -> None:
    access = await _access_token(member, team)
    await get_user_model().objects.filter(pk=member.pk).aupdate(is_active=False)
    term = Terminal.over_communicator(await open_socket(path(capsule), bearer(access)))
    await assert_fatal(term, "authentication failed: user is inactive", capsule)


async def test_other_teams_capsule_reads_as_not_found(
    open_socket: Any, other_capsule: Sandbox, api_key: str
) -> None:
    term = await terminal(open_socket, other_capsule, api_key)
    await assert_fatal(term, "sandbox not found", other_capsule)


async def test_unknown_capsule(open_socket: Any, capsule: Sandbox, api_key: str) -> None:
    term = Terminal.over_communicator(await open_socket("/v1/capsules/cl-nope/pty", key_header(api_key)))
    await assert_fatal(term, "sandbox not found", capsule)


async def test_stopped_capsule(open_socket: Any, capsule: Sandbox, api_key: str) -> None:
    await Sandbox.objects.filter(pk=capsule.pk).aupdate(status="stopped")
    term = await terminal(open_socket, capsule, api_key)
    await assert_fatal(term, "sandbox is not running (status: stopped)", capsule)


async def test_admin_route_refuses_non_staff(open_socket: Any, capsule: Sandbox, api_key: str) -> None:
    term = await terminal(open_socket, capsule, api_key, route=f"/v1/admin/capsules/{capsule.id}/pty")
    await assert_fatal(term, "the admin terminal requires a staff account", capsule)


async def test_admin_route_opens_any_teams_capsule(
    open_socket: Any, other_capsule: Sandbox, team: Team
) -> None:
    staff = await get_user_model().objects.acreate(username="ops", is_staff=True)
    await Membership.objects.acreate(user=staff, team=team)
    access = await _access_token(staff, team)
    route = f"/v1/admin/capsules/{other_capsule.id}/pty"
    term = Terminal.over_communicator(await open_socket(route, bearer(access)))
    await term.start(cmd="/bin/echo", args=["admin-ok"])
    await term.read_until(b"admin-ok")


# --- bad frames --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("{not json", "invalid message: not valid JSON"),
        ("[1, 2]", "invalid message: expected a JSON object"),
        ('{"data": "x"}', "invalid message: missing 'type'"),
        ('{"type": "dance"}', "unknown message type 'dance'"),
        ('{"type": "input", "data": "%%%"}', "invalid input: 'data' is not valid base64"),
        (
            '{"type": "resize", "cols": 0, "rows": 24}',
            "invalid resize: 'cols' and 'rows' must be integers between 1 and 1000",
        ),
        (
            '{"type": "resize", "cols": -5, "rows": 24}',
            "invalid resize: 'cols' and 'rows' must be integers between 1 and 1000",
        ),
        (
            '{"type": "resize", "cols": 80, "rows": 100000}',
            "invalid resize: 'cols' and 'rows' must be integers between 1 and 1000",
        ),
    ],
)
async def test_bad_frame_in_a_session_is_a_non_fatal_error(
    open_socket: Any, capsule: Sandbox, api_key: str, frame: str, message: str
) -> None:
    communicator = await open_socket(path(capsule), key_header(api_key))
    term = Terminal.over_communicator(communicator)
    await term.start()
    await communicator.send_to(text_data=frame)
    error = await term.expect("error")
    assert error == {"type": "error", "data": message, "fatal": False}
    await term.type("echo still-$((2+3))\n")  # the session goes on, nothing accepted was lost
    await term.read_until(b"still-5")


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("{not json", "invalid message: not valid JSON"),
        ('{"type": "input", "data": "aGk="}', "first message must be type 'start' or 'connect'"),
        ('{"type": "connect"}', "connect requires a 'tag' field"),
        ('{"type": "connect", "tag": "pty-00000000"}', "pty session pty-00000000 not found"),
        (
            '{"type": "start", "cols": 5000}',
            "invalid start: 'cols' and 'rows' must be integers between 1 and 1000",
        ),
        ('{"type": "start", "args": "ls"}', "invalid start: 'args' must be a list of strings"),
    ],
)
async def test_bad_first_frame_is_fatal(
    open_socket: Any, capsule: Sandbox, api_key: str, frame: str, message: str
) -> None:
    communicator = await open_socket(path(capsule), key_header(api_key))
    await communicator.send_to(text_data=frame)
    await assert_fatal(Terminal.over_communicator(communicator), message, capsule)


async def test_frame_over_the_limit_closes_with_a_reason(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    communicator = await open_socket(path(capsule), key_header(api_key))
    term = Terminal.over_communicator(communicator)
    await term.start()
    await communicator.send_to(text_data=json.dumps({"type": "input", "data": "A" * (MAX_FRAME_BYTES + 4)}))
    error = await term.expect("error")
    assert error["fatal"] is True
    assert error["data"].endswith(f"exceeds the {MAX_FRAME_BYTES}-byte limit")
    closed = await communicator.receive_output(timeout=5)
    assert closed == {
        "type": "websocket.close",
        "code": 1009,
        "reason": f"frame exceeds {MAX_FRAME_BYTES} bytes",
    }
    await communicator.disconnect()
    await assert_nothing_left()


# --- the binary extension ----------------------------------------------------------


async def binary_terminal(open_socket: Any, capsule: Sandbox, api_key: str) -> Terminal:
    communicator = await open_socket(path(capsule), key_header(api_key), subprotocols=[BINARY_SUBPROTOCOL])
    term = Terminal.over_communicator(communicator)
    term.binary = True
    return term


async def test_the_binary_extension_carries_output_and_input_as_raw_bytes(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    term = await binary_terminal(open_socket, capsule, api_key)
    assert term.communicator.accepted_subprotocol == BINARY_SUBPROTOCOL
    script = (
        "stty raw -echo; printf 'READY\\377\\000'; head -c 300000 /dev/urandom > /tmp/r; "
        "read x; cat /tmp/r; sha256sum /tmp/r; exit 3"
    )
    tag = (await term.start(cmd="/bin/sh", args=["-c", script]))["tag"]  # control frames stay JSON
    await term.read_until(b"READY\xff\x00")  # bytes no UTF-8 text could carry
    await term.type(b"\n")  # a binary frame: input
    output = await term.read_until(b"  /tmp/r")
    body = output[len(b"READY\xff\x00") :]
    digest = body[300000:].split(b" ")[0].decode()
    assert hashlib.sha256(body[:300000]).hexdigest() == digest  # offsets checked frame by frame
    assert term.binary_frames >= 2
    assert (await term.expect("exit"))["exit_code"] == 3
    late = await binary_terminal(open_socket, capsule, api_key)  # a resume gets binary frames too
    await late.send(type="connect", tag=tag, offset=len(output) - 10)
    assert await late.read_until(b"  /tmp/r") == output[-10:]


async def test_a_json_client_of_the_same_session_still_gets_base64(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    binary = await binary_terminal(open_socket, capsule, api_key)
    tag = (await binary.start(cmd="/bin/sh", args=["-c", "stty -echo; read x; echo got-$x; read y"]))["tag"]
    text = await terminal(open_socket, capsule, api_key)
    await text.send(type="connect", tag=tag, offset=0)
    await asyncio.sleep(0.2)
    await binary.type(b"one\n")
    assert (await text.read_until(b"got-one")).endswith(b"got-one\r\n")
    assert text.binary_frames == 0
    await binary.read_until(b"got-one")


async def test_binary_frames_without_the_extension_are_refused(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    communicator = await open_socket(path(capsule), key_header(api_key))
    term = Terminal.over_communicator(communicator)
    await term.start(cmd="/bin/sh", args=["-c", "read x; echo got-$x"])
    await communicator.send_to(bytes_data=b"x\n")
    error = await term.expect("error")
    assert error == {
        "type": "error",
        "data": (
            "binary frames are not supported; send JSON text frames (or use the wrenn.binary.v1 subprotocol)"
        ),
        "fatal": False,
    }
    await term.type("text\n")  # the session goes on; the refused frame was not input
    assert (await term.read_until(b"got-text")).endswith(b"got-text\r\n")


async def test_a_binary_frame_before_a_session_is_fatal(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    term = await binary_terminal(open_socket, capsule, api_key)
    await term.communicator.send_to(bytes_data=b"ls\n")
    await assert_fatal(term, "binary frames are input: start or connect to a session first", capsule)


async def test_a_binary_frame_over_the_limit_closes_with_a_reason(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    term = await binary_terminal(open_socket, capsule, api_key)
    await term.start()
    await term.communicator.send_to(bytes_data=b"A" * (MAX_FRAME_BYTES + 1))
    error = await term.expect("error")
    assert error == {
        "type": "error",
        "data": f"frame of {MAX_FRAME_BYTES + 1} bytes exceeds the {MAX_FRAME_BYTES}-byte limit",
        "fatal": True,
    }
    assert (await term.communicator.receive_output(timeout=5))["code"] == 1009
    await term.communicator.disconnect()
    await assert_nothing_left()


async def test_host_agent_down(open_socket: Any, capsule: Sandbox, api_key: str) -> None:
    from tests.support.hostagent import free_port

    await Host.objects.filter(sandboxes=capsule).aupdate(address=f"127.0.0.1:{free_port()}")
    term = await terminal(open_socket, capsule, api_key)
    await term.send(type="start")
    await assert_fatal(term, "sandbox host is not reachable", capsule)


async def test_missing_command_is_reported(open_socket: Any, capsule: Sandbox, api_key: str) -> None:
    term = await terminal(open_socket, capsule, api_key)
    await term.send(type="start", cmd="/no/such/binary")
    frame = await term.recv()
    assert frame["type"] == "error"
    assert frame["fatal"] is True
    assert frame["data"].startswith("failed to start pty: ")
    assert "/no/such/binary" in frame["data"]
    await assert_closed_and_clean(term.communicator, capsule)


async def test_unknown_user_is_reported(open_socket: Any, capsule: Sandbox, api_key: str) -> None:
    term = await terminal(open_socket, capsule, api_key)
    await term.send(type="start", user="mallory")
    await assert_fatal(term, "failed to start pty: unknown user 'mallory'", capsule)


async def test_start_passes_args_envs_cwd_and_user(open_socket: Any, capsule: Sandbox, api_key: str) -> None:
    term = await terminal(open_socket, capsule, api_key)
    await term.start(
        cmd="/bin/sh",
        args=["-c", 'echo "$GREETING from $(pwd) as $(id -un)"'],
        envs={"GREETING": "hello"},
        cwd="/tmp",
        user="root",
    )
    await term.read_until(b"hello from /tmp as root")
    assert (await term.expect("exit"))["exit_code"] == 0


@pytest.mark.agent
async def test_a_stalled_host_agent_gives_a_non_fatal_timeout(
    open_socket: Any, team: Team, api_key: str, tmp_path: Any, settings: Any
) -> None:
    """A call that gets no answer within the agent deadline is reported, and the session goes on
    once the agent answers."""
    settings.HOSTAGENT_RPC_TIMEOUT = 2
    stalled = start_hostagent(tmp_path / "stalled")
    try:
        host = await Host.objects.acreate(address=stalled.address)
        capsule = await Sandbox.objects.acreate(team=team, host=host, status="running")
        await database_sync_to_async(create_on_agent)(stalled.address, capsule.id)
        term = await terminal(open_socket, capsule, api_key)
        await term.start(cmd="/bin/cat")
        os.kill(stalled.proc.pid, signal.SIGSTOP)
        try:
            await term.type("lost?\n")
            error = await term.expect("error", timeout=30)
        finally:
            os.kill(stalled.proc.pid, signal.SIGCONT)
        assert error == {
            "type": "error",
            "data": "failed to send input: sandbox host did not answer in time",
            "fatal": False,
        }
        await term.type("still-here\n")
        await term.read_until(b"still-here")
        # Closed before the agent stops: with the socket's input stream still open, the agent's
        # graceful stop would wait out its grace period.
        await term.communicator.disconnect()
    finally:
        stalled.stop()


async def _access_token(user: Any, team: Team) -> str:
    return (await database_sync_to_async(tokens_for)(user, team))["access"]


async def test_terminal_sessions_are_recorded_for_the_admin(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    first = await terminal(open_socket, capsule, api_key)
    started = await first.start(cmd="/bin/sh", args=["-c", "read line; exit 9"])
    second = await terminal(open_socket, capsule, api_key)
    await second.send(type="connect", tag=started["tag"])
    await second.type("bye\n")  # also proves the second viewer is attached
    row = await TerminalSession.objects.aget(sandbox=capsule, tag=started["tag"])
    assert row.started_by.startswith("key:wrn_")
    assert api_key.startswith(row.started_by[4:])
    assert (row.command, row.pid) == ("/bin/sh -c read line; exit 9", started["pid"])
    assert (await first.expect("exit"))["exit_code"] == 9
    await second.expect("exit")
    await assert_nothing_left()
    row = await TerminalSession.objects.aget(pk=row.pk)
    assert (row.exit_code, row.viewers) == (9, 0)
    assert row.ended_at is not None


async def test_the_agent_knows_who_started_a_session(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    term = await terminal(open_socket, capsule, api_key)
    tag = (await term.start(cmd="/bin/cat"))["tag"]
    async with grpc.aio.insecure_channel(capsule.host.address) as channel:  # type: ignore[union-attr]
        listing = await pb_grpc.HostAgentStub(channel).ListPtySessions(
            pb.ListPtySessionsRequest(sandbox_id=capsule.id), timeout=10
        )
    (session,) = [s for s in listing.sessions if s.tag == tag]
    assert session.owner.startswith("key:wrn_")


# --- offsets, resume and replay ------------------------------------------------------

RAW_SEQ = "stty raw -echo; seq 1 3000; printf END; read x"


async def test_output_frames_carry_their_offsets_from_zero(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    term = await terminal(open_socket, capsule, api_key)
    await term.start(cmd="/bin/sh", args=["-c", RAW_SEQ])
    output = await term.read_until(b"END")
    assert term.next_offset == len(output)  # every frame was at the offset the bytes before it add up to


async def test_connect_with_an_offset_resumes_at_exactly_that_byte(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    first = await terminal(open_socket, capsule, api_key)
    tag = (await first.start(cmd="/bin/sh", args=["-c", RAW_SEQ]))["tag"]
    output = await first.read_until(b"END")
    middle = len(output) // 2 + 3
    second = await terminal(open_socket, capsule, api_key)
    await second.send(type="connect", tag=tag, offset=middle)
    assert await second.read_until(b"END") == output[middle:]
    assert second.missed == []


async def test_connect_without_an_offset_replays_the_screen(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    first = await terminal(open_socket, capsule, api_key)
    tag = (await first.start())["tag"]
    await first.type("echo seen-$((2*21))\n")
    await first.read_until(b"seen-42")
    late = await terminal(open_socket, capsule, api_key)
    await late.send(type="connect", tag=tag)
    await late.read_until(b"seen-42")


async def test_replayed_terminal_queries_are_neutralised(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    first = await terminal(open_socket, capsule, api_key)
    tag = (await first.start(cmd="/bin/sh", args=["-c", r"printf 'a\033[6nb\033]11;?\007c'; read x"]))["tag"]
    await first.read_until(b"c")
    late = await terminal(open_socket, capsule, api_key)
    await late.send(type="connect", tag=tag)
    # Same length, so offsets stay exact; the browser has nothing to answer.
    assert await late.read_until(b"c") == b"a" + b"\0" * 4 + b"b" + b"\0" * 7 + b"c"


@pytest.mark.agent
async def test_an_evicted_offset_is_reported_as_missed_bytes(
    open_socket: Any, team: Team, api_key: str, tmp_path: Any
) -> None:
    small = start_hostagent(tmp_path / "small", args=["--replay-buffer", "4096"])
    try:
        host = await Host.objects.acreate(address=small.address)
        capsule = await Sandbox.objects.acreate(team=team, host=host, status="running")
        await database_sync_to_async(create_on_agent)(small.address, capsule.id)
        first = await terminal(open_socket, capsule, api_key)
        tag = (await first.start(cmd="/bin/sh", args=["-c", RAW_SEQ]))["tag"]
        output = await first.read_until(b"END")
        late = await terminal(open_socket, capsule, api_key)
        await late.send(type="connect", tag=tag, offset=0)
        missed = await late.expect("missed")
        assert missed == {"type": "missed", "bytes": len(output) - 4096, "offset": len(output) - 4096}
        assert await late.read_until(b"END") == output[-4096:]
    finally:
        small.stop()


async def test_an_offset_beyond_the_output_is_refused(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    first = await terminal(open_socket, capsule, api_key)
    tag = (await first.start(cmd="/bin/sh", args=["-c", RAW_SEQ]))["tag"]
    output = await first.read_until(b"END")
    late = await terminal(open_socket, capsule, api_key)
    await late.send(type="connect", tag=tag, offset=len(output) + 10)
    frame = await late.recv()
    assert frame == {
        "type": "error",
        "data": f"offset {len(output) + 10} is beyond the end of the output ({len(output)} bytes)",
        "fatal": True,
    }


async def test_a_connect_after_the_exit_gets_the_exit_code(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    first = await terminal(open_socket, capsule, api_key)
    tag = (await first.start(cmd="/bin/sh", args=["-c", "echo bye; exit 7"]))["tag"]
    assert (await first.expect("exit"))["exit_code"] == 7
    late = await terminal(open_socket, capsule, api_key)
    await late.send(type="connect", tag=tag)
    assert (await late.expect("exit"))["exit_code"] == 7
    assert b"bye" in late.output


class LosingLayer(InMemoryChannelLayer):
    """Loses every other output message, as Redis' layers do silently once a channel is full."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lost = 0

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        if message["type"] == "terminal.output":
            self.lost += 1
            if self.lost % 2:
                return
        await super().group_send(group, message)


async def test_messages_the_channel_layer_loses_are_refilled(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any, caplog: Any
) -> None:
    """Half the output a viewer gets through the layer is lost on the way and must be refetched.

    The output (541 KB) fits the agent's replay buffer (1 MiB), so every byte can be recovered.
    The leader gets its own output first-hand; the second viewer gets it through the layer.
    """
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.pty.test_consumer.LosingLayer"}}
    leader = await terminal(open_socket, capsule, api_key)
    script = (
        "stty raw -echo; echo READY; read go; "
        "head -c 400000 /dev/urandom | base64 -w 100; printf '<END>'; read x"
    )
    tag = (await leader.start(cmd="/bin/sh", args=["-c", script]))["tag"]
    term = await terminal(open_socket, capsule, api_key)
    await term.send(type="connect", tag=tag, offset=0)
    await term.read_until(b"READY\n")  # typed before this, "go" would be echoed
    await term.type("go\n")
    output = await term.read_until(b"<END>", timeout=60)  # '<' is not in the base64 alphabet
    assert term.missed == []
    body = output[output.index(b"READY\n") + 6 : output.index(b"<END>")]
    assert len(body) == 533336 + 5334  # 400,000 bytes in base64 (padded), 100 columns a line
    assert await leader.read_until(b"<END>", timeout=60) == output
    assert "lost on the way" in caplog.text  # the refill really ran


class LateJoinLayer(InMemoryChannelLayer):
    """Holds back every 'terminal.joined' event until released: the leader hears of a newcomer late."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.held: list[tuple[str, dict[str, Any]]] = []
        self.holding = True

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        if message["type"] == "terminal.joined" and self.holding:
            self.held.append((group, message))
            return
        await super().group_send(group, message)

    async def release(self) -> None:
        self.holding = False
        for group, message in self.held:
            await super().group_send(group, message)


async def test_output_read_before_the_leader_hears_of_a_newcomer_reaches_it(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    """A leader alone sends output to its own client only. Output it reads after a newcomer's
    catch-up but before it hears of the newcomer must still reach the newcomer, even when
    nothing more follows (the session goes quiet)."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.pty.test_consumer.LateJoinLayer"}}
    settings.PTY_VIEWER_COUNT_SECONDS = 3600.0  # only the join event tells the leader
    leader = await terminal(open_socket, capsule, api_key)
    script = "stty raw -echo; printf READY; read go; printf '<END>'; read x"
    tag = (await leader.start(cmd="/bin/sh", args=["-c", script]))["tag"]
    await leader.read_until(b"READY")
    late = await terminal(open_socket, capsule, api_key)
    await late.send(type="connect", tag=tag, offset=0)
    await late.read_until(b"READY")
    await late.type("go\n")
    assert await leader.read_until(b"<END>") == b"READY<END>"
    await asyncio.sleep(2 * MARK_AFTER_QUIET)  # the leader went quiet, still thinking itself alone
    await get_channel_layer().release()
    assert await late.read_until(b"<END>", timeout=10) == b"READY<END>"


async def test_ctrl_c_reaches_a_process_flooding_the_terminal(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    term = await terminal(open_socket, capsule, api_key)
    await term.start(cmd="/bin/sh", args=["-c", "yes flood"])
    await term.read_until(b"flood\r\nflood\r\n")
    await term.type(b"\x03")  # Ctrl-C, typed while output is still pouring out
    assert (await term.expect("exit", timeout=60))["exit_code"] == 130
