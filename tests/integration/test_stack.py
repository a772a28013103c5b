"""The whole path on real components: daphne subprocesses, PostgreSQL, Redis and a host agent.

Each test drives the documented protocol with a WebSocket client and the demo API key.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from websockets.asyncio.client import connect

from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.support.hostagent import REPO_ROOT, free_port
from tests.support.stack import Stack, wait_for_http
from tests.support.terminal import JSON_DIALECT, Terminal

pytestmark = [pytest.mark.timeout(120)]

Connect = Callable[..., Any]


@pytest.fixture
def socket(stack: Stack, demo: dict[str, Any]) -> Connect:
    @asynccontextmanager
    async def open_(
        worker: int = 0, key: str | None = None, base: str | None = None
    ) -> AsyncIterator[Terminal]:
        url = f"{base or stack.ws_url(worker)}/v1/capsules/{demo['capsule_id']}/pty"
        headers = [("X-API-Key", key or demo["api_key"])]
        async with connect(
            url, subprotocols=JSON_DIALECT, additional_headers=headers, max_size=None
        ) as websocket:
            yield Terminal.over_websocket(websocket)

    return open_


async def test_shell_round_trip(socket: Connect) -> None:
    async with socket() as term:
        started = await term.start()
        assert re.fullmatch(r"pty-[0-9a-f]{8}", started["tag"])
        await term.type("echo $((6*7))wrenn\n")
        await term.read_until(b"42wrenn")


async def test_full_screen_programs(socket: Connect) -> None:
    """vim (on the alternate screen) and top draw the whole screen and quit cleanly, as locally."""
    async with socket() as term:
        await term.start(cols=100, rows=30)
        await term.type("vim -u NONE /tmp/notes.txt\r")
        await term.read_until(b"\x1b[?1049h")  # vim switched to the alternate screen
        await term.read_until(b'"/tmp/notes.txt"')  # and is ready for keys
        # Ctrl-O runs one command from insert mode; Esc followed at once by ':' could be taken
        # for an Alt key, and Ctrl-C would make vim discard everything typed ahead.
        await term.type("iwritten-in-vim\x0f:wq\r")
        await term.read_until(b"\x1b[?1049l")  # vim is back on the main screen: the shell reads again
        await term.type("cat /tmp/notes.txt; top -d 0.5\r")
        await term.read_until(b"written-in-vim\r\n")
        await term.read_until(b"load average")
        prompts = term.output.count(b"\x1b[?2004h")  # bash turns bracketed paste on at each prompt
        await term.type("q")
        # Typed ahead, the next line could be read, and dropped, by top as it quits.
        while term.output.count(b"\x1b[?2004h") == prompts:
            await term.recv()
        await term.type("echo top-$((1+1))-done\r")
        await term.read_until(b"top-2-done")


async def test_exit_codes(socket: Connect) -> None:
    for code in (0, 1, 42):
        async with socket() as term:
            await term.start(cmd="/bin/sh", args=["-c", f"exit {code}"])
            assert (await term.expect("exit"))["exit_code"] == code


async def test_resize(socket: Connect) -> None:
    async with socket() as term:
        await term.start(cols=90, rows=20)
        await term.send(type="resize", cols=120, rows=40)
        await term.type("stty size; echo ok\n")
        await term.read_until(b"40 120\r\nok")


async def test_kill(socket: Connect) -> None:
    async with socket() as term:
        await term.start(cmd="/bin/sh", args=["-c", "sleep 600 & sleep 600"])
        await term.send(type="kill")
        assert (await term.expect("exit"))["exit_code"] == 137


async def test_ctrl_c_stops_a_flood(socket: Connect) -> None:
    async with socket() as term:
        await term.start(cmd="/bin/sh", args=["-c", "yes flood"])
        await term.read_until(b"flood\r\nflood\r\n")
        await term.type(b"\x03")
        assert (await term.expect("exit", timeout=60))["exit_code"] == 130


async def test_connect_from_a_second_socket(socket: Connect) -> None:
    async with socket() as first:
        tag = (await first.start())["tag"]
        async with socket() as second:
            await second.send(type="connect", tag=tag)
            await second.type("echo second-$((3*3))\n")
            await second.read_until(b"second-9")
            await first.read_until(b"second-9")
            await first.type("exit 5\n")
            assert (await first.expect("exit"))["exit_code"] == 5
            assert (await second.expect("exit"))["exit_code"] == 5


async def test_a_megabyte_of_random_output_arrives_byte_exact(socket: Connect) -> None:
    script = (
        "stty raw -echo; head -c 1048576 /dev/urandom > /tmp/blob; "
        "printf BEGIN-BLOB-7f3a; cat /tmp/blob; printf END-BLOB-7f3a; sha256sum /tmp/blob"
    )
    async with socket() as term:
        await term.start(cmd="/bin/sh", args=["-c", script])
        assert (await term.expect("exit"))["exit_code"] == 0
        output = bytes(term.output)
    blob = output[output.index(b"BEGIN-BLOB-7f3a") + 15 : output.rindex(b"END-BLOB-7f3a")]
    digest = output[output.rindex(b"END-BLOB-7f3a") + 13 :].split()[0].decode()
    assert len(blob) == 1048576
    assert hashlib.sha256(blob).hexdigest() == digest


async def test_another_teams_key_cannot_reach_the_capsule(stack: Stack, socket: Connect) -> None:
    other_key = stack.manage(
        "shell",
        "--verbosity=0",
        "-c",
        "from capsules.models import Team; from capsules.keys import create_api_key; "
        "t = Team.objects.create(name='Other', slug='other'); print(create_api_key(t, 'x')[1])",
    ).strip()
    async with socket(key=other_key) as term:
        assert await term.recv() == {"type": "error", "data": "sandbox not found", "fatal": True}


@pytest.fixture
def runserver(stack: Stack) -> Iterator[str]:
    """`manage.py runserver` on the stack's database and agent; yields its WebSocket base URL.

    A plain fixture: starting it and waiting for it block, off the test's event loop.
    """
    port = free_port()
    log = stack.data_dir / "runserver.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=REPO_ROOT,
            env=stack.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/admin/login/", proc, log)
        yield f"ws://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_runserver_serves_the_terminal(runserver: str, socket: Connect) -> None:
    async with socket(base=runserver) as term:
        await term.start(cmd="/bin/echo", args=["runserver-ok"])
        await term.read_until(b"runserver-ok")


def test_readme_example_client(stack: Stack, demo: dict[str, Any]) -> None:
    """The example client (docs/protocol.md, "Try it"), on the demo API key alone, runs a command
    and returns its exit code."""
    result = subprocess.run(
        [
            sys.executable,
            "examples/terminal_client.py",
            "--url",
            stack.ws_url(),
            "--key",
            demo["api_key"],
            "--cmd",
            "/bin/sh",
            "--arg=-c",
            "--arg=read line; echo got-$line; exit 7",
            demo["capsule_id"],
        ],
        cwd=REPO_ROOT,
        input=b"hello\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 7, result.stderr
    assert b"got-hello" in result.stdout


def test_a_dead_viewer_is_noticed_and_released(stack: Stack, demo: dict[str, Any]) -> None:
    """A client that stops answering WebSocket pings is closed; its session runs on without it."""
    url = f"{stack.ws_url()}/v1/capsules/{demo['capsule_id']}/pty"
    client = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "tests/integration/dead_viewer.py"), url, demo["api_key"]],
        stdout=subprocess.PIPE,
    )
    try:
        assert client.stdout is not None
        tag = client.stdout.readline().decode().strip()
        assert tag.startswith("pty-")
        assert session_streams(stack, demo["capsule_id"], tag) == 1  # its worker reads the session
        client.send_signal(signal.SIGSTOP)  # alive to TCP, deaf to pings
        deadline = time.monotonic() + 30
        while session_streams(stack, demo["capsule_id"], tag) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert session_streams(stack, demo["capsule_id"], tag) == 0  # the viewer was released
        assert tag in running_sessions(stack, demo["capsule_id"])  # and the shell lives on
    finally:
        client.kill()
        client.wait()


def _sessions(stack: Stack, capsule_id: str) -> list[Any]:
    with grpc.insecure_channel(stack.agent_address) as channel:
        reply = pb_grpc.HostAgentStub(channel).ListPtySessions(
            pb.ListPtySessionsRequest(sandbox_id=capsule_id),
            timeout=10,
            metadata=(("authorization", f"Bearer {stack.agent_token}"),),
        )
    return list(reply.sessions)


def session_streams(stack: Stack, capsule_id: str, tag: str) -> int:
    return sum(s.streams for s in _sessions(stack, capsule_id) if s.tag == tag)


def running_sessions(stack: Stack, capsule_id: str) -> list[str]:
    return [s.tag for s in _sessions(stack, capsule_id) if not s.exited]
