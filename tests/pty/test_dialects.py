"""Each dialect on the same route, stated or recognised, through the real ASGI application and a
real host agent (docs/protocol.md, "Choosing a dialect")."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from capsules.models import Sandbox
from pty.dialects import JSON_SUBPROTOCOL, RAW_SUBPROTOCOL
from tests.pty.test_consumer import assert_fatal, key_header, path
from tests.support.terminal import Terminal

pytestmark = [pytest.mark.timeout(60)]

# Reference frame types: a client without extensions never receives another.
REFERENCE_TYPES = {"started", "output", "exit", "error", "ping"}
# Long enough that a client kept waiting for its dialect would time out the test's reads.
NEVER = 120_000


async def reference(open_socket: Any, capsule: Sandbox, api_key: str, query: str = "") -> Terminal:
    """A client that states no dialect and authenticates by header, as the wrenn SDKs do."""
    communicator = await open_socket(path(capsule) + query, key_header(api_key), subprotocols=[])
    return Terminal.over_communicator(communicator)


ECHO = ["-c", "stty -echo; read x; printf 'got-%s\\n' \"$x\"; read y"]


async def test_raw_input_shows_the_raw_dialect_and_output_comes_as_bare_bytes(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    settings.PTY_DIALECT_WAIT_MS = NEVER
    term = await reference(open_socket, capsule, api_key)
    assert term.communicator.accepted_subprotocol is None  # wrenn SDK 0.3 asks for none
    await term.start(cmd="/bin/sh", args=["-c", "stty raw -echo; read x; printf 'got\\377\\000'; read y"])
    term.raw = True
    await term.type(b"one\n")  # a binary frame, as SDK 0.3 writes
    output = await term.read_until(b"got\xff\x00")
    # No offset prefix, no base64: only the bytes (and the echo of the input, when it came before
    # the shell turned echo off).
    assert output.removeprefix(b"one\r\n") == b"got\xff\x00"
    assert term.binary_frames >= 1
    assert term.kinds <= REFERENCE_TYPES


async def test_json_input_shows_the_reference_dialect_without_extensions(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    settings.PTY_DIALECT_WAIT_MS = NEVER
    term = await reference(open_socket, capsule, api_key)
    await term.start(cmd="/bin/sh", args=ECHO)
    await term.type("one\n")  # base64 JSON input, as SDK 0.2 and the reference tab write
    frame = await term.expect("output")
    assert set(frame) == {"type", "data"}  # no offset: the reference sends none
    assert (await term.read_until(b"got-one")).endswith(b"got-one\r\n")
    assert term.kinds <= REFERENCE_TYPES


async def test_output_waits_for_the_dialect_and_none_of_it_is_lost(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    settings.PTY_DIALECT_WAIT_MS = NEVER
    term = await reference(open_socket, capsule, api_key)
    script = "head -c 200000 /dev/zero | tr '\\0' x; printf END; read y"
    await term.start(cmd="/bin/sh", args=["-c", script])
    term.raw = True
    await term.type(b"\n")  # shows the dialect after all of the output is out
    output = await term.read_until(b"END")
    assert output.count(b"x") == 200000  # held by offset while unknown, then sent in order


async def test_a_silent_client_gets_the_default_dialect_after_the_window(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    settings.PTY_DIALECT_WAIT_MS = 200
    term = await reference(open_socket, capsule, api_key)
    await term.start(cmd="/bin/sh", args=["-c", "printf 'first-bytes'; read y"])
    frame = await term.expect("output")  # reads before it writes: JSON, the default
    assert base64.b64decode(frame["data"]) == b"first-bytes"[: len(base64.b64decode(frame["data"]))]
    assert await term.read_until(b"first-bytes") == b"first-bytes"
    assert term.binary_frames == 0


async def test_the_default_dialect_is_a_setting(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    settings.PTY_DIALECT_WAIT_MS = 200
    settings.PTY_DEFAULT_DIALECT = "raw"
    term = await reference(open_socket, capsule, api_key)
    await term.start(cmd="/bin/sh", args=["-c", "printf 'first-bytes'; read y"])
    term.raw = True
    assert await term.read_until(b"first-bytes") == b"first-bytes"
    assert term.binary_frames >= 1


async def test_the_auth_frame_shows_the_reference_browser_tab_at_once(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    settings.PTY_DIALECT_WAIT_MS = NEVER
    term = Terminal.over_communicator(await open_socket(path(capsule), subprotocols=[]))
    await term.send(type="auth", token=api_key)
    await term.start(cmd="/bin/sh", args=["-c", "printf 'prompt$ '; read y"])
    frame = await term.expect("output")  # reads before it writes, and waits for nothing
    assert set(frame) == {"type", "data"}
    assert await term.read_until(b"prompt$ ") == b"prompt$ "


@pytest.mark.parametrize(
    ("query", "subprotocols", "accepted", "kind"),
    [
        ("?dialect=raw", [], None, "raw"),
        ("?dialect=json", [], None, "json"),
        ("?dialect=binary", [], None, "binary"),
        ("", [RAW_SUBPROTOCOL], RAW_SUBPROTOCOL, "raw"),
        ("", [JSON_SUBPROTOCOL], JSON_SUBPROTOCOL, "json+"),
        ("", ["chat", RAW_SUBPROTOCOL], RAW_SUBPROTOCOL, "raw"),
        ("?dialect=json", [RAW_SUBPROTOCOL], RAW_SUBPROTOCOL, "raw"),  # the subprotocol wins
    ],
)
async def test_a_stated_dialect_never_waits(
    open_socket: Any,
    capsule: Sandbox,
    api_key: str,
    settings: Any,
    query: str,
    subprotocols: list[str],
    accepted: str | None,
    kind: str,
) -> None:
    settings.PTY_DIALECT_WAIT_MS = NEVER
    communicator = await open_socket(path(capsule) + query, key_header(api_key), subprotocols=subprotocols)
    assert communicator.accepted_subprotocol == accepted
    term = Terminal.over_communicator(communicator)
    term.raw = kind == "raw"
    term.binary = kind == "binary"
    await term.start(cmd="/bin/sh", args=["-c", "printf 'prompt$ '; read y"])
    frame = await term.expect("output")
    assert ("offset" in frame) == (kind in ("binary", "json+"))
    assert await term.read_until(b"prompt$ ") == b"prompt$ "
    assert (term.binary_frames > 0) == (kind in ("raw", "binary"))


async def test_an_unknown_dialect_is_refused_by_name(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    term = await reference(open_socket, capsule, api_key, "?dialect=msgpack")
    await assert_fatal(term, "unknown dialect 'msgpack': use one of json, raw, binary", capsule)


async def test_a_raw_client_gets_no_extension_frames_on_connect(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    """Connect without an offset, as SDK 0.3's pty_connect does: the recent screen, bare bytes."""
    settings.PTY_DIALECT_WAIT_MS = NEVER
    starter = await reference(open_socket, capsule, api_key, "?dialect=json")
    tag = (
        await starter.start(cmd="/bin/sh", args=["-c", "printf 'before\\n'; read x; echo after-$x; read y"])
    )["tag"]
    await starter.read_until(b"before")
    viewer = await reference(open_socket, capsule, api_key)
    await viewer.send(type="connect", tag=tag)
    viewer.raw = True
    await viewer.type(b"two\n")
    assert (await viewer.read_until(b"after-two")).startswith(b"before")
    assert viewer.kinds <= REFERENCE_TYPES


async def test_a_connect_with_an_offset_asks_for_the_extensions(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    settings.PTY_DIALECT_WAIT_MS = NEVER
    starter = await reference(open_socket, capsule, api_key, "?dialect=json")
    tag = (await starter.start(cmd="/bin/sh", args=["-c", "printf 'before\\n'; read y"]))["tag"]
    await starter.read_until(b"before")
    viewer = await reference(open_socket, capsule, api_key, "?dialect=json")
    await viewer.send(type="connect", tag=tag, offset=2)
    frame = await viewer.expect("output")
    assert frame["offset"] == 2
    assert base64.b64decode(frame["data"]) == b"fore\r\n"[: len(base64.b64decode(frame["data"]))]


async def test_an_authenticated_socket_must_start_or_connect_in_time(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    settings.PTY_FIRST_FRAME_TIMEOUT_SECONDS = 0.3
    term = await reference(open_socket, capsule, api_key)
    await assert_fatal(term, "no 'start' or 'connect' within 0.3 seconds", capsule)


async def test_keepalive_pings_go_out_while_the_dialect_is_unknown(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    settings.PTY_DIALECT_WAIT_MS = NEVER
    settings.PTY_KEEPALIVE_SECONDS = 0.2
    communicator = await open_socket(path(capsule), key_header(api_key), subprotocols=[])
    await communicator.send_to(text_data=json.dumps({"type": "start", "cmd": "/bin/sh", "args": ECHO[1:]}))
    kinds = set()
    while "ping" not in kinds:
        kinds.add(json.loads(await communicator.receive_from(timeout=10))["type"])
    await communicator.send_to(text_data=json.dumps({"type": "pong"}))  # decides nothing
    assert kinds <= {"started", "ping"}
