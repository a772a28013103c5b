"""Wrenn's published Python SDKs against the stack, each through its own public API: 0.2.0 speaks
the JSON dialect, 0.3.0 the raw one (binary input and output frames, JSON control frames), on the
same route, with nothing telling the server which (docs/protocol.md: dialects)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as websocket_connect

from tests.support.sdk import (
    SDK_VERSIONS,
    Sdk,
    connect,
    drop,
    kill,
    read_until,
    read_until_event,
    resize,
    sdk_python,
    start,
    write,
)
from tests.support.stack import Stack, running_stack
from tests.support.terminal import Terminal

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]

Reference = Callable[[], AbstractAsyncContextManager[Terminal]]

# Every byte value but ENQ (0x05), which a replay to a newcomer turns into a NUL
# (hostagent/queries.py); in this order no other run of bytes is a terminal query.
KNOWN = bytes(value for value in range(256) if value != 0x05)
PRINTF_KNOWN = "printf '" + "".join(f"\\{value:03o}" for value in KNOWN) + "'"
# Between markers the terminal's echo of the command cannot contain ('BEGIN%s' prints BEGIN-).
PRINT_KNOWN = f"printf 'BEGIN%s' -; {PRINTF_KNOWN}; printf 'END%s' -"


def between_markers(output: bytes) -> bytes:
    """What came between BEGIN- and END-, which must have come exactly once."""
    assert output.count(b"BEGIN-") == 1, output[-400:]
    return output.split(b"BEGIN-", 1)[1].split(b"END-", 1)[0]


@pytest.fixture(scope="module")
def sdk_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(Path(tmp_path_factory.mktemp("sdk-stack"))) as running:
        yield running


@pytest.fixture(scope="module")
def sdk_demo(sdk_stack: Stack) -> dict[str, Any]:
    return sdk_stack.demo()


@pytest.fixture(scope="module")
def sdks(
    sdk_stack: Stack, sdk_demo: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Sdk]:
    """Every SDK version, configured for the demo capsule with the demo key, on the route under
    /api that Wrenn's public deployment serves (the SDK's default base URL ends in /api)."""
    workdir = tmp_path_factory.mktemp("sdk-cwd")
    return {
        version: Sdk(
            version,
            sdk_python(version),
            f"{sdk_stack.base_url}/api",
            sdk_demo["api_key"],
            sdk_demo["capsule_id"],
            workdir,
        )
        for version in SDK_VERSIONS
    }


@pytest.fixture(params=SDK_VERSIONS)
def sdk(request: pytest.FixtureRequest, sdks: dict[str, Sdk]) -> Sdk:
    return sdks[request.param]


@pytest.fixture
def reference(sdk_stack: Stack, sdk_demo: dict[str, Any]) -> Reference:
    """A client of the reference's JSON protocol that states no dialect, as the reference's own."""

    @asynccontextmanager
    async def open_() -> AsyncIterator[Terminal]:
        url = f"{sdk_stack.ws_url()}/v1/capsules/{sdk_demo['capsule_id']}/pty"
        headers = [("X-API-Key", sdk_demo["api_key"])]
        async with websocket_connect(url, additional_headers=headers, max_size=None) as websocket:
            yield Terminal.over_websocket(websocket)

    return open_


def test_a_command_s_output_arrives_byte_exact(sdk: Sdk) -> None:
    run = sdk.run(start(), write(f"stty -opost; {PRINT_KNOWN}\n"), read_until("END-")).check()
    assert between_markers(run.output) == KNOWN
    assert run.errors == []


def test_a_resize_reaches_the_terminal(sdk: Sdk) -> None:
    size = "echo size-$(stty size | tr ' ' x)\n"
    run = sdk.run(
        start(cols=90, rows=30),
        write(size),
        read_until("size-30x90"),
        resize(120, 40),
        write(size),
        read_until("size-40x120"),
    ).check()
    assert run.errors == []


def test_reconnecting_by_tag_continues_the_session(sdk: Sdk) -> None:
    """A client that crashed (its socket dropped, nothing killed) comes back with pty_connect: the
    same shell goes on, after a replay of what it printed before."""
    first = sdk.run(start(), write("X=kept-$((40+2)); echo one-$((0+1))\n"), read_until("one-1"), drop())
    first.check()
    again = sdk.run(connect(first.tag), write("echo two-$X\n"), read_until("two-kept-42")).check()
    assert b"one-1" in again.output.split(b"two-kept-42")[0]
    assert again.errors == []


def test_kill_ends_the_session_with_the_signal_s_exit_code(sdk: Sdk) -> None:
    run = sdk.run(
        start(), write("echo ready-$((1+1))\n"), read_until("ready-2"), kill(), read_until_event("exit")
    ).check()
    assert run.exit_codes == [137]
    assert run.errors == []


def test_the_shell_s_exit_code_reaches_the_sdk(sdk: Sdk) -> None:
    run = sdk.run(start(), write("exit 7\n"), read_until_event("exit")).check()
    assert run.exit_codes == [7]
    assert run.errors == []


def test_connecting_to_a_missing_tag_ends_with_a_fatal_error(sdk: Sdk) -> None:
    run = sdk.run(connect("pty-00000000"), read_until_event("error")).check()
    assert [(error["data"], error["fatal"]) for error in run.errors] == [
        ("pty session pty-00000000 not found", True)
    ]


def test_a_wrong_api_key_is_refused_with_the_sdk_s_authentication_error(sdk: Sdk) -> None:
    run = dataclasses.replace(sdk, api_key="wrn_" + "0" * 40).run(start())
    assert run.returncode == 1, str(run)
    assert (run.failure or "").startswith("Capsule.connect: WrennAuthenticationError"), str(run)


async def test_a_late_viewer_of_a_long_session_gets_no_frame_it_does_not_know(
    sdk: Sdk, reference: Reference
) -> None:
    """2 MiB of output, more than the agent keeps for a replay (1 MiB): a viewer joining later
    gets the recent part, and what it cannot get is told in a frame its SDK knows."""
    script = "stty raw -echo; head -c 2097152 /dev/zero | tr '\\0' a; printf '<END>'; read x"
    async with reference() as term:
        tag = (await term.start(cmd="/bin/sh", args=["-c", script]))["tag"]
        await term.read_until(b"<END>")
        run = (await sdk.arun(connect(tag), write("\n"), read_until_event("exit"))).check()
    assert run.exit_codes == [0]
    assert run.output.endswith(b"a" * 65536 + b"<END>")
    assert set(run.output[: -len(b"<END>")]) == {ord("a")}
    assert all(not error["fatal"] for error in run.errors), str(run)


async def test_three_dialects_on_one_session_each_see_every_byte(
    sdks: dict[str, Sdk], reference: Reference
) -> None:
    """A reference JSON client starts the session; a 0.2.0 and a 0.3.0 viewer join it by tag, and
    the known bytes are printed only once both have typed, so all three are attached for them."""
    script = f"stty raw -echo; read a; read b; {PRINT_KNOWN}; read c; exit 5"
    async with reference() as term:
        tag = (await term.start(cmd="/bin/bash", args=["-c", script]))["tag"]
        viewers = [
            asyncio.create_task(
                sdks[version].arun(connect(tag), write(f"{version}\n"), read_until_event("exit"))
            )
            for version in SDK_VERSIONS
        ]
        try:
            await term.read_until(b"END-")
            await term.type("c\n")
            assert (await term.expect("exit"))["exit_code"] == 5
            runs = [(await viewer).check() for viewer in viewers]
        finally:
            for viewer in viewers:
                viewer.cancel()
            await asyncio.gather(*viewers, return_exceptions=True)
    assert between_markers(bytes(term.output)) == KNOWN
    for run in runs:
        assert between_markers(run.output) == KNOWN, run.version
        assert run.exit_codes == [5]
        assert run.errors == []


def test_a_legacy_client_that_only_reads_gets_all_its_output(sdks: dict[str, Sdk]) -> None:
    """SDK 0.2.0 never writes here: the server learns nothing of its dialect, and after waiting
    for a sign (WRENN_PTY_DIALECT_WAIT_MS) serves the default, JSON, from the first byte."""
    script = "stty raw -echo; seq 1 20000; exit 3"
    run = sdks["0.2.0"].run(start(cmd="/bin/sh", args=["-c", script]), read_until_event("exit")).check()
    assert run.output == b"".join(b"%d\n" % number for number in range(1, 20001))
    assert run.exit_codes == [3]
    assert run.errors == []
