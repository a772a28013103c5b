"""Recordings on the real stack: what the host agent recorded from the PTY, pushed to daphne and
served back by the API, compared with what a viewer received over the WebSocket (exactly the
PTY's bytes); markers, input only when the team asked, nothing when it turned recording off; the
size cap against hostile output; and a host agent killed with SIGKILL mid-session."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from websockets.asyncio.client import connect

from tests.support.polling import wait_until
from tests.support.stack import Stack, running_stack
from tests.support.terminal import Terminal

pytestmark = [pytest.mark.timeout(240)]

SMALL_CAP = 65536
BASH = {
    "cmd": "/bin/bash",
    "args": ["--norc", "--noprofile"],
    "envs": {"TERM": "xterm-256color", "PS1": "$ "},
}


@pytest.fixture(scope="module")
def small_cap_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"WRENN_RECORDING_MAX_BYTES": str(SMALL_CAP)}
    with running_stack(Path(tmp_path_factory.mktemp("cap-stack")), env=env) as stack:
        yield stack


def get(stack: Stack, path: str, api_key: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(stack.base_url + path, headers={"X-API-Key": api_key})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the test's stack
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def listed(stack: Stack, demo: dict[str, Any], tag: str) -> dict[str, Any] | None:
    status, _, body = await asyncio.to_thread(
        get, stack, f"/v1/capsules/{demo['capsule_id']}/recordings", demo["api_key"]
    )
    assert status == 200, body
    return next((r for r in json.loads(body) if r["tag"] == tag), None)


async def finished(stack: Stack, demo: dict[str, Any], tag: str) -> dict[str, Any]:
    """The recording's list entry once its last chunk (with the exit code) is in."""
    found: dict[str, Any] = {}

    async def done() -> bool:
        found["row"] = await listed(stack, demo, tag)
        return bool(found["row"] and found["row"]["ended_at"])

    await wait_until(done, within=60)
    return found["row"]


async def cast_of(stack: Stack, demo: dict[str, Any], tag: str) -> tuple[dict[str, Any], list[list[Any]]]:
    status, headers, body = await asyncio.to_thread(
        get, stack, f"/v1/capsules/{demo['capsule_id']}/recordings/{tag}", demo["api_key"]
    )
    assert status == 200, body
    assert headers["Content-Type"] == "application/x-asciicast"
    lines = body.split(b"\n")
    assert lines[-1] == b"", "every stored line is whole"
    header = json.loads(lines[0])
    assert header["version"] == 2
    events = [json.loads(line) for line in lines[1:-1]]
    for event in events:
        assert isinstance(event, list), event
        assert len(event) == 3, event
        assert event[1] in ("o", "i", "r", "m"), event
        assert isinstance(event[2], str), event
    assert [e[0] for e in events] == sorted(e[0] for e in events)
    return header, events


def output_of(events: list[list[Any]]) -> bytes:
    return "".join(e[2] for e in events if e[1] == "o").encode()


def set_team(stack: Stack, demo: dict[str, Any], **flags: bool) -> None:
    with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
        for name, value in flags.items():
            conn.execute(
                f"UPDATE capsules_team SET {name} = %s WHERE id = %s",  # noqa: S608 - names from the test
                (value, demo["team_id"]),
            )


def ws(stack: Stack, demo: dict[str, Any]) -> Any:
    url = f"{stack.ws_url()}/v1/capsules/{demo['capsule_id']}/pty"
    return connect(url, additional_headers=[("X-API-Key", demo["api_key"])], max_size=None)


async def run_to_exit(terminal: Terminal) -> int:
    frame = await terminal.expect("exit", timeout=60)
    return int(frame["exit_code"])


async def test_a_session_with_a_resize_and_vim_plays_back_byte_for_byte(
    stack: Stack, demo: dict[str, Any]
) -> None:
    async with ws(stack, demo) as socket:
        terminal = Terminal.over_websocket(socket)
        started = await terminal.start(cols=80, rows=24, **BASH)
        await terminal.type("echo before-$((1+1))\n")
        await terminal.read_until(b"before-2")
        await terminal.send(type="resize", cols=120, rows=40)
        await terminal.type("stty size; echo after-$((2+2))\n")
        await terminal.read_until(b"after-4")
        # vim draws its full screen (alternate screen, cursor moves, colours) and quits by itself:
        # keys typed while it exits would go to it, not to the shell.
        await terminal.type(
            "vim -u NONE -N -n -c 'normal ihello from vim é' -c redraw -c wq /tmp/recorded.txt; "
            "cat /tmp/recorded.txt; echo vim-$((5+1))-done\n"
        )
        await terminal.read_until(b"vim-6-done")
        await terminal.type("exit\n")
        assert await run_to_exit(terminal) == 0
    row = await finished(stack, demo, started["tag"])
    assert row["exit_code"] == 0
    assert row["truncated"] is False
    header, events = await cast_of(stack, demo, started["tag"])
    assert (header["width"], header["height"]) == (80, 24)
    assert header["command"] == "/bin/bash --norc --noprofile"
    # Byte for byte what the viewer got: the PTY's own bytes.
    assert output_of(events) == bytes(terminal.output)
    # The resize sits between the output before it and the output that shows the new size.
    (resize,) = [i for i, e in enumerate(events) if e[1] == "r"]
    assert events[resize][2] == "120x40"
    before, after = output_of(events[:resize]), output_of(events[resize:])
    assert b"before-2" in before
    assert b"40 120" in after
    assert b"40 120" not in before
    assert "hello from vim é".encode() in after
    assert b"\x1b[?1049h" in after  # vim's alternate screen
    assert row["duration"] >= events[-1][0] - 0.001


async def test_viewers_joining_and_leaving_and_a_kill_are_marked(stack: Stack, demo: dict[str, Any]) -> None:
    async with ws(stack, demo) as first:
        terminal = Terminal.over_websocket(first)
        started = await terminal.start(cmd="/bin/cat")
        async with ws(stack, demo) as second:
            watcher = Terminal.over_websocket(second)
            await watcher.send(type="connect", tag=started["tag"])
            await terminal.type("seen by two\n")
            await watcher.read_until(b"seen by two")
        await terminal.read_until(b"seen by two\r\nseen by two")

        async def marked(label: str) -> bool:
            _, events = await cast_of(stack, demo, started["tag"])
            return any(e[1] == "m" and e[2].startswith(label) for e in events)

        # The leave is marked without waiting for the agent: wait for it before the kill.
        await wait_until(lambda: marked("leave "), within=60)
        await terminal.send(type="kill")
        assert await run_to_exit(terminal) == 137
    await finished(stack, demo, started["tag"])
    _, events = await cast_of(stack, demo, started["tag"])
    markers = [e[2] for e in events if e[1] == "m"]
    # The starter's join (marked once the session exists), the watcher's join and leave, the kill.
    label = markers[-4].removeprefix("join ").removesuffix(" (peer)")
    assert label.startswith("key:wrn_"), markers
    assert markers[-4:] == [f"join {label} (peer)", f"join {label} (peer)", f"leave {label} (peer)", "kill"]


async def test_input_is_recorded_only_when_the_team_turned_it_on(stack: Stack, demo: dict[str, Any]) -> None:
    tags = {}
    for record_input in (True, False):
        set_team(stack, demo, record_input=record_input)
        try:
            async with ws(stack, demo) as socket:
                terminal = Terminal.over_websocket(socket)
                tags[record_input] = (await terminal.start(**BASH))["tag"]
                await terminal.type("echo typed-$((4+4))\n")
                await terminal.read_until(b"typed-8")
                await terminal.type("exit\n")
                await run_to_exit(terminal)
        finally:
            set_team(stack, demo, record_input=False)
    with_input = await finished(stack, demo, tags[True])
    without = await finished(stack, demo, tags[False])
    assert (with_input["input_recorded"], without["input_recorded"]) == (True, False)
    _, events = await cast_of(stack, demo, tags[True])
    assert "".join(e[2] for e in events if e[1] == "i") == "echo typed-$((4+4))\nexit\n"
    _, events = await cast_of(stack, demo, tags[False])
    assert [e for e in events if e[1] == "i"] == []


async def test_a_team_with_recording_off_gets_none(stack: Stack, demo: dict[str, Any]) -> None:
    set_team(stack, demo, record_terminals=False)
    try:
        async with ws(stack, demo) as socket:
            terminal = Terminal.over_websocket(socket)
            off = (await terminal.start(cmd="/bin/echo", args=["unrecorded"]))["tag"]
            assert await run_to_exit(terminal) == 0
    finally:
        set_team(stack, demo, record_terminals=True)
    async with ws(stack, demo) as socket:
        terminal = Terminal.over_websocket(socket)
        on = (await terminal.start(cmd="/bin/echo", args=["recorded"]))["tag"]
        assert await run_to_exit(terminal) == 0
    await finished(stack, demo, on)  # by now anything of the earlier session would be in too
    assert await listed(stack, demo, off) is None
    status, _, body = await asyncio.to_thread(
        get, stack, f"/v1/capsules/{demo['capsule_id']}/recordings/{off}", demo["api_key"]
    )
    assert status == 404
    assert json.loads(body)["error"]["message"].endswith(f"has no recording of terminal session {off}")


async def test_hostile_output_stops_at_the_size_cap(small_cap_stack: Stack) -> None:
    stack = small_cap_stack
    demo = stack.demo()
    flood = (
        r"""s=$(printf '"]\n[0, "o", "x"] \033[31m\377'); yes "$s" | head -c 3000000; """
        r"""echo; echo flood-$((6*7))"""
    )
    async with ws(stack, demo) as socket:
        terminal = Terminal.over_websocket(socket)
        started = await terminal.start(cmd="/bin/sh", args=["-c", flood])
        await terminal.read_until(b"flood-42", timeout=120)
        assert await run_to_exit(terminal) == 0
    row = await finished(stack, demo, started["tag"])
    assert row["truncated"] is True
    assert row["bytes"] <= SMALL_CAP
    _, events = await cast_of(stack, demo, started["tag"])
    assert events[-1][1:] == ["m", f"recording stopped: it reached its size cap of {SMALL_CAP} bytes"]
    # The fake events stayed text inside real ones; the byte that is not UTF-8 became U+FFFD.
    assert '"]\r\n[0, "o", "x"] \x1b[31m\ufffd' in output_of(events).decode()
    stored = Path(stack.env["WRENN_DATA_DIR"]) / "recordings"
    assert sum(p.stat().st_size for p in stored.rglob("*") if p.is_file()) <= SMALL_CAP


async def test_a_host_agent_killed_mid_session_leaves_a_valid_recording(small_cap_stack: Stack) -> None:
    """Last in the module: the agent is gone afterwards."""
    stack = small_cap_stack
    demo = stack.demo()
    assert stack.agent is not None
    async with ws(stack, demo) as socket:
        terminal = Terminal.over_websocket(socket)
        started = await terminal.start(**BASH)
        tag = started["tag"]
        await terminal.type("echo pushed-$((3*3))\n")
        await terminal.read_until(b"pushed-9")

        async def pushed() -> bool:
            row = await listed(stack, demo, tag)
            if row is None or not row["bytes"]:  # the row comes with the start, chunks after
                return False
            return b"pushed-9" in output_of((await cast_of(stack, demo, tag))[1])

        await wait_until(pushed, within=60)
        await terminal.type("for i in $(seq 1 100000); do echo line-$i; done\n")
        await terminal.read_until(b"line-2000\r\n", timeout=60)
        stack.agent.proc.kill()  # SIGKILL: no flush, no goodbye
        stack.agent.proc.wait()
    _, events = await cast_of(stack, demo, tag)  # every stored line parses (cast_of checks)
    recorded = output_of(events)
    seen = bytes(terminal.output)
    assert b"pushed-9" in recorded
    # What was stored is exactly the start of what the session wrote, whichever is longer.
    shorter = min(len(recorded), len(seen))
    assert recorded[:shorter] == seen[:shorter]
    row = await listed(stack, demo, tag)
    assert row is not None
    assert row["ended_at"] is None
