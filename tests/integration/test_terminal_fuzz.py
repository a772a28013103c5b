"""Malformed and odd frames against a real daphne: none crashes the consumer, each is answered
with its own error, and once the sockets are gone the worker is back where it was.

The frames are generated from a fixed seed (the same every run), around the cases a probe of
the socket found crashing the consumer: lone surrogates, an offset past 2**64, deep nesting and
frames over the limit. They go before authentication, after it, and to an attached session.
Crashes show as close code 1011 and a traceback in the worker's log; what a connection leaves
behind shows in the worker's own count of asyncio tasks and its resident memory, read with
wrenn/diagnostics.py's snapshot (WRENN_DIAGNOSTICS_FILE, SIGUSR1).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from pty import protocol as p
from tests.pty.test_protocol_fuzz import FIELDS
from tests.support.polling import wait_until
from tests.support.stack import Stack, running_stack
from wrenn import diagnostics

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

SEED = 20261202
LIMIT = p.MAX_FRAME_BYTES
DAPHNE_LIMIT = 1024 * 1024  # daphne's own --websocket-max-message-size
SERVER_TYPES = {p.STARTED, p.OUTPUT, p.EXIT, p.ERROR, p.PING, p.MISSED, p.VIEWERS}
# A server that takes longer than this to answer one frame is broken, not slow.
ANSWER_WITHIN = 30.0
# The tasks an idle worker may have beyond those of the baseline at any moment: requests that
# happen to be in flight (the host agent heartbeats every half second).
TASK_SLACK = 10
# Resident memory a worker may gain over two rounds past the warm-up. Seen here: the first rounds
# grow daphne by 3, then 1.5 MiB (allocator pools and caches), the next by under 0.6 MiB each; a
# crashed connection kept about 30 KB, some 2 MiB a round.
WARM_UP_ROUNDS = 2
RSS_SLACK = 4 * 1024 * 1024
# Every text frame goes to the process, in raw mode so that no byte of it is a signal or an
# end of file; only "fuzz-ready" comes back.
SHELL = ["-c", "stty raw -echo; echo fuzz-ready; exec cat >/dev/null"]


# --- the frames ----------------------------------------------------------------------------------

ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    2**63,
    2**64 - 1,
    2**64,
    -(2**64),
    10**30,
    1.5,
    1e308,
    float("nan"),
    float("inf"),
    "",
    "x",
    "\ud800",
    "a\udc00b",
    "\ud83d\ude00",  # a valid pair: one character, nothing wrong with it
    "a\u0000b",
    "A" * 5000,
    [],
    [1, "x"],
    ["\ud800"],
    {},
    {"a": 1},
    {"\ud800": "x"},
    {"A": "\udfff"},
    json.loads("[" * 50 + "]" * 50),
]
UNKNOWN_TYPES = ["", "START", "ping", "output", "exit", "x" * 100, "\ud800", "typ\u0000e"]


def _dumps(value: Any) -> str:
    # Escapes lone surrogates as \udXXX, as a client's JSON encoder sends them.
    return json.dumps(value)


PONG_OVERHEAD = len(_dumps({"type": "pong", "pad": ""}))


def known_frames() -> list[str | bytes]:
    """The cases the probe found, and their neighbours."""
    nested = 100_000
    return [
        '{"type": "auth", "token": "\\ud800"}',
        '{"type": "start", "cmd": "\\ud800"}',
        '{"type": "start", "envs": {"A": "\\udc00"}}',
        '{"type": "start", "args": ["\\udbff"]}',
        '{"type": "connect", "tag": "pty-00000000", "offset": 18446744073709551616}',
        '{"type": "connect", "tag": "pty-00000000", "offset": ' + "9" * 5000 + "}",
        "[" * nested + "]" * nested,
        '{"type": "start", "args": ' + "[" * nested + "]" * nested + "}",
        '{"a":' * 40_000 + "1" + "}" * 40_000,
        _dumps({"type": "input", "data": "A" * (LIMIT + 4)}),  # over the limit
        "é" * (LIMIT // 2 + 1),  # under it in characters, over it in bytes
        _dumps({"type": "pong", "pad": "A" * (LIMIT - PONG_OVERHEAD)}),  # exactly at the limit
        "A" * (DAPHNE_LIMIT + 1),  # over daphne's own limit
        b"\x00" * (LIMIT + 1),
        b"\xff" * (DAPHNE_LIMIT + 1),
        "",
        b"",
        b"\xff\xfe\x00garbage",
        "null",
        "[]",
        '"type"',
        '{"type": null}',
        '{"type": "input", "data": "not base64!"}',
        '{"type": "input", "data": "\\ud800"}',
        '{"type": "resize", "cols": NaN, "rows": Infinity}',
        '{"type": "start"} trailing',
        '{"type": "start", "type": "kill"}',
    ]


def field_frames() -> list[str]:
    """Every field of every message with every odd value, and every unknown type."""
    frames = [
        _dumps({"type": kind, name: value})
        for kind, names in FIELDS.items()
        for name in names
        for value in ODD_VALUES
    ]
    frames += [_dumps({"type": kind}) for kind in UNKNOWN_TYPES]
    frames += [_dumps({"type": value}) for value in ODD_VALUES if not isinstance(value, str)]
    return frames


def random_frames(rng: random.Random, count: int) -> list[str | bytes]:
    """Messages of random shape, JSON cut short or with garbage, random text and random bytes."""
    names = sorted({name for names in FIELDS.values() for name in names} | {"type", "extra", ""})
    kinds = sorted(FIELDS) + UNKNOWN_TYPES
    frames: list[str | bytes] = []
    for _ in range(count):
        shape = rng.randrange(5)
        if shape == 0:
            message: dict[str, Any] = {"type": rng.choice(kinds)}
            for name in rng.sample(names, rng.randrange(4)):
                message[name] = rng.choice(ODD_VALUES)
            frames.append(_dumps(message))
        elif shape == 1:
            whole = _dumps({"type": rng.choice(kinds), rng.choice(names): rng.choice(ODD_VALUES)})
            frames.append(whole[: rng.randrange(len(whole))])
        elif shape == 2:
            frames.append(_dumps({"type": rng.choice(kinds)}) + rng.choice(["x", "}", "]", ",", " {}"]))
        elif shape == 3:
            alphabet = '{}[]":,\\ \t\nabcu0123456789eE+-.ntrufls\u00e9\u20ac\U0001f600'
            frames.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 64))))
        else:
            frames.append(rng.randbytes(rng.choice([1, 2, 8, 9, 100, 4096])))
    return frames


def size(frame: str | bytes) -> int:
    return len(frame.encode("utf-8") if isinstance(frame, str) else frame)


def parse_error(frame: str) -> str | None:
    """The error the frame's parse raises, as the client must see it; ``None`` when it parses.
    Any other exception is a crash of the server's own parse and is named so."""
    try:
        p.parse(frame)
    except p.ProtocolError as exc:
        return str(exc)
    except Exception as exc:  # a crash to report, which the server has too
        return f"<{type(exc).__name__} in parse>"
    return None


def parsed_type(frame: str) -> str | None:
    try:
        return p.parse(frame).type
    except Exception:  # not a message
        return None


# --- talking to the socket -----------------------------------------------------------------------


@dataclass(frozen=True)
class Lane:
    name: str
    header: bool  # credentials by header; else by an auth frame, which is then fuzzed
    subprotocol: str | None = None

    def headers(self, key: str) -> list[tuple[str, str]]:
        return [("X-API-Key", key)] if self.header else []


PRE_ATTACH = [
    Lane("before attach, json", header=True),
    Lane("before attach, binary", header=True, subprotocol=p.BINARY_SUBPROTOCOL),
    Lane("before authentication", header=False),
]
ATTACHED = [
    Lane("attached, json", header=True),
    Lane("attached, binary", header=True, subprotocol=p.BINARY_SUBPROTOCOL),
]


@dataclass
class Target:
    stack: Stack
    url: str
    key: str
    log: Path
    diagnostics_template: str
    problems: list[str] = field(default_factory=list)

    def open(self, lane: Lane) -> Any:
        return connect(
            self.url,
            additional_headers=lane.headers(self.key),
            subprotocols=[Subprotocol(lane.subprotocol)] if lane.subprotocol else None,
            max_size=None,
        )

    def problem(self, lane: Lane, frame: str | bytes, what: str) -> None:
        shown = repr(frame[:80]) + (f"... ({size(frame)} bytes)" if size(frame) > 80 else "")
        self.problems.append(f"{lane.name}: {shown}: {what}")


def decode(message: str | bytes) -> dict[str, Any]:
    if isinstance(message, bytes):
        return {"type": p.OUTPUT, "binary": True}
    frame = json.loads(message)
    assert isinstance(frame, dict), message
    return frame


async def until_closed(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every frame the server sends until it closes the socket."""
    frames = []
    try:
        while True:
            frames.append(decode(await asyncio.wait_for(ws.recv(), ANSWER_WITHIN)))
    except ConnectionClosed:
        return frames


async def send_quietly(ws: ClientConnection, frame: str | bytes) -> None:
    # Closed by an earlier frame: what is checked is how.
    with contextlib.suppress(ConnectionClosed):
        await ws.send(frame)


def check_close(
    target: Target, lane: Lane, frame: str | bytes, ws: ClientConnection, frames: list[dict[str, Any]]
) -> None:
    code, reason = ws.close_code, ws.close_reason or ""
    errors = [f for f in frames if f.get("type") == p.ERROR]
    unknown = [f for f in frames if f.get("type") not in SERVER_TYPES]
    if unknown:
        target.problem(lane, frame, f"frames of no server type: {unknown[:2]}")
    if size(frame) > LIMIT and code == 1009:
        # The limit is named: in an error frame before the close, or in the close's reason.
        said = reason + " ".join(str(e.get("data")) for e in errors)
        if not re.search(rf"\b({LIMIT}|{DAPHNE_LIMIT})\b", said):
            target.problem(lane, frame, f"closed with 1009 without naming the limit: {reason!r} {errors[:1]}")
        return
    if size(frame) > LIMIT and (isinstance(frame, str) or lane.subprotocol):
        target.problem(lane, frame, f"over the limit, closed with {code} {reason!r}, errors {errors[:1]}")
        return
    if code != 1000:
        target.problem(lane, frame, f"closed with {code} {reason!r} after {frames[-2:]}")
        return
    last = frames[-1] if frames else {}
    ended = last.get("type") == p.EXIT or (
        last.get("type") == p.ERROR and last.get("fatal") is True and last.get("data")
    )
    if not ended:
        target.problem(lane, frame, f"closed without a fatal error or an exit; last frames {frames[-2:]}")
    expected = parse_error(frame) if isinstance(frame, str) else None
    if expected is not None and (not errors or errors[0].get("data") != expected):
        target.problem(lane, frame, f"expected the error {expected!r}, got {errors[:1]}")


async def fuzz_before_attach(target: Target, lane: Lane, frames: list[str | bytes]) -> None:
    """One socket a frame, then a ``kill``: fatal before a session, so the server always closes;
    and if the frame did start a session, the kill ends it."""
    for frame in frames:
        async with target.open(lane) as ws:
            await send_quietly(ws, frame)
            await send_quietly(ws, _dumps({"type": p.KILL}))
            check_close(target, lane, frame, ws, await until_closed(ws))


async def answers_until(ws: ClientConnection, probe_error: str) -> list[dict[str, Any]]:
    """The error frames before the probe's own error (output and pings skipped)."""
    errors: list[dict[str, Any]] = []
    while True:
        frame = decode(await asyncio.wait_for(ws.recv(), ANSWER_WITHIN))
        if frame["type"] == p.ERROR:
            if frame.get("data") == probe_error:
                return errors
            errors.append(frame)


async def read_until_text(ws: ClientConnection, marker: bytes) -> None:
    seen = b""
    while marker not in seen:
        message = await asyncio.wait_for(ws.recv(), ANSWER_WITHIN)
        if isinstance(message, bytes):
            seen += message[p.BINARY_HEADER.size :]
            continue
        frame = json.loads(message)
        assert frame["type"] in (p.OUTPUT, p.PING, p.STARTED, p.VIEWERS), frame
        if frame["type"] == p.OUTPUT:
            seen += base64.b64decode(frame["data"])


async def attach(ws: ClientConnection, tag: str | None) -> str:
    """Starts the session (``tag`` None) or joins it again; its tag, once the shell is ready."""
    if tag is None:
        await ws.send(_dumps({"type": p.START, "cmd": "/bin/sh", "args": SHELL}))
        started = decode(await asyncio.wait_for(ws.recv(), ANSWER_WITHIN))
        assert started["type"] == p.STARTED, started
        tag = str(started["tag"])
    else:
        await ws.send(_dumps({"type": p.CONNECT, "tag": tag, "offset": 0}))
    await read_until_text(ws, b"fuzz-ready")
    return tag


def check_answers(
    target: Target, lane: Lane, frame: str | bytes, tag: str, errors: list[dict[str, Any]]
) -> None:
    if any(e.get("fatal") is not False or not e.get("data") for e in errors):
        target.problem(lane, frame, f"errors while attached: {errors}")
    if isinstance(frame, bytes):
        # Input in the binary dialect, refused (non-fatally) in the json one.
        if len(errors) > 1:
            target.problem(lane, frame, f"{len(errors)} errors for one binary frame")
        return
    expected = parse_error(frame)
    kind = parsed_type(frame)
    if kind in (p.START, p.CONNECT, p.AUTH):
        expected = f"'{kind}' is not allowed here: already attached to {tag}"
    if [e.get("data") for e in errors] != ([expected] if expected else []):
        target.problem(lane, frame, f"expected {expected!r}, got {errors}")


async def fuzz_attached(target: Target, lane: Lane, frames: list[str | bytes]) -> None:
    """One session, every frame followed by a probe whose error marks the end of the frame's
    answers: each must be non-fatal, and a frame that does not parse gets exactly its error. A
    socket that ends is a problem; the next frames go on a new one, joined to the session."""
    tag: str | None = None
    pending = list(frames)
    while pending:
        async with target.open(lane) as ws:
            tag = await attach(ws, tag)
            try:
                while pending:
                    frame = pending[0]
                    probe = _dumps({"type": f"probe-{len(pending)}"})
                    await ws.send(frame)
                    await ws.send(probe)
                    check_answers(target, lane, frame, tag, await answers_until(ws, parse_error(probe) or ""))
                    pending.pop(0)
            except (ConnectionClosed, TimeoutError) as exc:
                target.problem(lane, pending.pop(0), f"ended the attached socket: {exc!r}")
    assert tag is not None
    # A frame over the limit ends even an attached socket, with 1009; the session lives on.
    over = _dumps({"type": p.INPUT, "data": "A" * (LIMIT + 4)})
    async with target.open(lane) as ws:
        await attach(ws, tag)
        await send_quietly(ws, over)
        check_close(target, lane, over, ws, await until_closed(ws))
    async with target.open(lane) as ws:
        await attach(ws, tag)
        await ws.send(_dumps({"type": p.KILL}))
        left = await until_closed(ws)
        if ws.close_code != 1000 or not left or left[-1]["type"] != p.EXIT:
            target.problem(lane, "kill", f"the session did not end: {ws.close_code} {left[-2:]}")


def corpus() -> tuple[list[str | bytes], list[str | bytes]]:
    """(frames before attach, frames to an attached session), the same every run."""
    rng = random.Random(SEED)
    fields: list[str | bytes] = list(field_frames())
    before: list[str | bytes] = known_frames() + rng.sample(fields, 60) + random_frames(rng, 60)
    attached = [
        frame
        for frame in known_frames() + fields + random_frames(rng, 120)
        if size(frame) <= LIMIT and (isinstance(frame, bytes) or parsed_type(frame) != p.KILL)
    ]
    return before, attached


async def fuzz_round(target: Target) -> None:
    before, attached = corpus()
    for lane in PRE_ATTACH:
        await fuzz_before_attach(target, lane, before)
    for lane in ATTACHED:
        await fuzz_attached(target, lane, attached)


# --- the worker ----------------------------------------------------------------------------------


async def snapshot(target: Target) -> dict[str, Any]:
    pid = target.stack.workers[0][1].pid
    path = diagnostics.snapshot_path(target.diagnostics_template, pid)
    path.unlink(missing_ok=True)
    os.kill(pid, diagnostics.SIGNAL)
    await wait_until(path.exists)
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def terminal_tasks(snap: dict[str, Any]) -> dict[str, int]:
    """The worker's tasks that run the terminal app's code (pty/)."""
    return {kind: n for kind, n in snap["task_kinds"].items() if kind.startswith("pty.")}


async def settled(target: Target) -> dict[str, Any]:
    """A snapshot once no task of a terminal is left (failing after ANSWER_WITHIN seconds)."""
    latest: dict[str, Any] = {}

    async def no_terminal_tasks() -> bool:
        latest.update(await snapshot(target))
        return not terminal_tasks(latest)

    try:
        await wait_until(no_terminal_tasks, within=ANSWER_WITHIN, every=0.5)
    except AssertionError:
        waits = {kind: places for kind, places in latest.get("waits", {}).items() if kind.startswith("pty.")}
        raise AssertionError(
            f"terminal tasks left in daphne after every socket closed: {terminal_tasks(latest)}; "
            f"where they wait: {waits}"
        ) from None
    return latest


TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ ")
EXCEPTION = re.compile(r"^\w+(Error|Exception): ")


def log_problems(log: Path, start: int) -> list[str]:
    """Tracebacks and errors the log gained since ``start`` (its size then)."""
    text = log.read_bytes()[start:].decode(errors="replace")
    tracebacks = text.count("Traceback (most recent call last)")
    lines = text.splitlines()
    errors = {TIMESTAMP.sub("", line) for line in lines if " ERROR " in line or EXCEPTION.match(line)}
    if not tracebacks and not errors:
        return []
    return [f"{tracebacks} tracebacks in {log.name}; the errors:", *sorted(errors)]


# --- tests ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: its worker writes diagnostics snapshots."""
    data_dir = Path(tmp_path_factory.mktemp("fuzz"))
    template = str(data_dir / "diagnostics-{pid}.json")
    with running_stack(data_dir, env={"WRENN_DIAGNOSTICS_FILE": template}) as stack:
        yield stack


@pytest.fixture(scope="module")
def target(fuzz_stack: Stack) -> Target:
    demo = fuzz_stack.demo()
    return Target(
        stack=fuzz_stack,
        url=f"{fuzz_stack.ws_url()}/v1/capsules/{demo['capsule_id']}/pty",
        key=demo["api_key"],
        log=fuzz_stack.data_dir / f"daphne-{fuzz_stack.port}.log",
        diagnostics_template=fuzz_stack.env["WRENN_DIAGNOSTICS_FILE"],
    )


async def test_no_frame_crashes_the_consumer(target: Target) -> None:
    """Each frame gets its error and a close of 1000 (1009 over the limit); never 1011, never a
    traceback in daphne's log."""
    agent = target.stack.agent
    assert agent is not None
    assert agent.log_path is not None
    logs = [(target.log, target.log.stat().st_size), (agent.log_path, agent.log_path.stat().st_size)]
    target.problems.clear()
    await fuzz_round(target)
    problems = target.problems + [line for log, start in logs for line in log_problems(log, start)]
    if problems:
        pytest.fail(f"{len(target.problems)} frames misanswered:\n" + "\n".join(problems[:80]), pytrace=False)


async def test_the_worker_keeps_nothing_of_closed_sockets(target: Target) -> None:
    """After warm-up rounds, more rounds leave no task behind and the worker's memory where it was."""
    for _ in range(WARM_UP_ROUNDS):  # pools, caches, the first of everything
        await fuzz_round(target)
    base = await settled(target)
    for _ in range(2):
        await fuzz_round(target)
        now = await settled(target)
        assert now["tasks"] <= base["tasks"] + TASK_SLACK, (base["task_kinds"], now["task_kinds"])
    assert now["rss_bytes"] - base["rss_bytes"] <= RSS_SLACK, (
        f"daphne grew {(now['rss_bytes'] - base['rss_bytes']) / 2**20:.1f} MiB over two rounds"
    )
