"""Flow control on the real stack: a process flooding its terminal for a viewer that reads 10 KiB/s.

The bounds asserted here are the ones docs/protocol.md states. Memory is the resident set read from
/proc, of daphne, the host agent and Redis, sampled while the flood runs; how long the flood
runs is part of the workload, and no test asserts how fast anything is.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect

from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.support.hostagent import token_metadata
from tests.support.polling import wait_until
from tests.support.stack import REDIS_URL, Stack, running_stack
from tests.support.terminal import JSON_DIALECT, Terminal

pytestmark = [pytest.mark.timeout(180)]

SLOW_RATE = 10 * 1024  # bytes a second the slow viewer reads
FLOOD_READS = 100 * 1024  # how much of the flood the slow viewer reads
# The bounds for one flooding session that docs/protocol.md states (see "Flow control").
MIB = 1024 * 1024
DAPHNE_BOUND = 6 * MIB
AGENT_BOUND = 6 * MIB
REDIS_BOUND = 4 * MIB
# Bytes the writer got out beyond what the viewer read: the agent's replay buffer (1 MiB) and
# queue, the leader's pace window, daphne's send buffer and the kernel's socket buffers.
WRITTEN_AHEAD_BOUND = 8 * MIB


@pytest.fixture(scope="module")
def flow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One worker as configured by default, with production keepalives."""
    with running_stack(Path(tmp_path_factory.mktemp("flow")), workers=1, ping=(20, 30)) as running:
        yield running


@pytest.fixture(scope="module")
def flow_demo(flow_stack: Stack) -> dict[str, Any]:
    return flow_stack.demo()


@pytest.fixture(scope="module")
def slow_clients_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two workers configured for slow clients (WRENN_WS_SEND_BUFFER, see docs/configuration.md): with the
    kernel's own sizing, a 10 KiB/s client would read minutes of backlog before anything new."""
    with running_stack(
        Path(tmp_path_factory.mktemp("slow")),
        workers=2,
        ping=(20, 30),
        env={"WRENN_WS_SEND_BUFFER": "32768"},
    ) as running:
        yield running


@pytest.fixture(scope="module")
def slow_clients_demo(slow_clients_stack: Stack) -> dict[str, Any]:
    return slow_clients_stack.demo()


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class PeakMemory:
    """Samples the resident set of some processes until stopped; growth is peak minus first sample."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.base = {name: rss(pid) for name, pid in pids.items()}
        self.peak = dict(self.base)
        self._task = asyncio.ensure_future(self._sample())

    async def _sample(self) -> None:
        while True:
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss(pid))
            await asyncio.sleep(0.1)

    async def stop(self) -> dict[str, int]:
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        return {name: self.peak[name] - self.base[name] for name in self.pids}


class SlowViewer:
    """Reads frames no faster than SLOW_RATE bytes a second, with a small socket receive buffer,
    so the server sees a client that really is slow. Checks offsets like Terminal does."""

    def __init__(self, websocket: ClientConnection, rate: int = SLOW_RATE) -> None:
        self.websocket = websocket
        self.rate = rate
        self.read = 0
        self.next_offset: int | None = None
        self.missed: list[dict[str, Any]] = []

    async def frame(self) -> dict[str, Any]:
        """The next frame; the roster's `viewers` frames are read (slowly) and passed over."""
        while True:
            text = await self.websocket.recv()
            assert isinstance(text, str)
            await asyncio.sleep(len(text) / self.rate)
            frame: dict[str, Any] = json.loads(text)
            if frame["type"] != "viewers":
                break
        if frame["type"] == "output":
            size = len(base64.b64decode(frame["data"]))
            assert self.next_offset is None or frame["offset"] == self.next_offset, frame["offset"]
            self.next_offset = frame["offset"] + size
            self.read += size
        elif frame["type"] == "missed":
            assert self.next_offset is not None
            assert frame["offset"] == self.next_offset + frame["bytes"]
            self.next_offset = frame["offset"]
            self.missed.append(frame)
        return frame

    async def send(self, **message: Any) -> None:
        await self.websocket.send(json.dumps(message))


@asynccontextmanager
async def slow_viewer(
    stack: Stack, demo: dict[str, Any], worker: int, rate: int = SLOW_RATE
) -> AsyncIterator[SlowViewer]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024)
    sock.connect(("127.0.0.1", stack.workers[worker][0]))
    url = f"{stack.ws_url(worker)}/v1/capsules/{demo['capsule_id']}/pty"
    headers = [("X-API-Key", demo["api_key"])]
    # No pings of its own: their pongs would wait behind the backlog this client reads so slowly.
    options: dict[str, Any] = {"max_size": None, "max_queue": 1, "ping_interval": None, "close_timeout": 1}
    async with connect(
        url, sock=sock, subprotocols=JSON_DIALECT, additional_headers=headers, **options
    ) as ws:
        yield SlowViewer(ws, rate)


@asynccontextmanager
async def fast_viewer(stack: Stack, demo: dict[str, Any], worker: int) -> AsyncIterator[Terminal]:
    """Reads as fast as it can, while the test reads it; no pings of its own, since a test may
    leave it unread for a while (its pongs would wait behind the output)."""
    url = f"{stack.ws_url(worker)}/v1/capsules/{demo['capsule_id']}/pty"
    headers = [("X-API-Key", demo["api_key"])]
    async with connect(
        url, subprotocols=JSON_DIALECT, additional_headers=headers, max_size=None, ping_interval=None
    ) as ws:
        yield Terminal.over_websocket(ws)


def session(stack: Stack, tag: str) -> Any:
    with grpc.insecure_channel(stack.agent_address) as channel:
        reply = pb_grpc.HostAgentStub(channel).ListPtySessions(
            pb.ListPtySessionsRequest(), metadata=token_metadata(stack.agent_token)
        )
    (found,) = [info for info in reply.sessions if info.tag == tag]
    return found


def redis_pid() -> int:
    return int(redis.Redis.from_url(REDIS_URL).info("server")["process_id"])


def process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat ("Z" for a zombie), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


async def test_a_flood_read_at_10_kib_s_blocks_the_writer_in_bounded_memory(
    flow_stack: Stack, flow_demo: dict[str, Any]
) -> None:
    """``yes`` for a lone viewer reading 10 KiB/s; then Ctrl-C, while the flood is still queued."""
    assert flow_stack.agent is not None
    async with slow_viewer(flow_stack, flow_demo, 0) as viewer:
        await viewer.send(type="start", cmd="/bin/sh", args=["-c", "read go; exec yes"])
        started = await viewer.frame()
        assert started["type"] == "started", started
        memory = PeakMemory(
            {"daphne": flow_stack.workers[0][1].pid, "agent": flow_stack.agent.proc.pid, "redis": redis_pid()}
        )
        await viewer.send(type="input", data=base64.b64encode(b"go\n").decode())
        while viewer.read < FLOOD_READS:
            frame = await viewer.frame()
            assert frame["type"] in ("output", "ping"), frame
        growth = await memory.stop()
        written = session(flow_stack, started["tag"]).bytes_out

        # Ctrl-C is typed while megabytes of `yes` are still queued for this viewer.
        typed = time.monotonic()
        await viewer.send(type="input", data=base64.b64encode(b"\x03").decode())
        await wait_until(lambda: process_state(started["pid"]) in ("Z", "gone"), within=120, every=0.01)
        took = time.monotonic() - typed
        still_unread = session(flow_stack, started["tag"]).bytes_out - viewer.read
    print(f"slow viewer read {viewer.read} bytes; the writer wrote {written}; memory growth {growth}")
    print(f"Ctrl-C reached `yes` after {took * 1000:.0f} ms, with {still_unread} bytes unread")
    assert viewer.missed == []  # the only viewer sets the pace: it misses nothing
    assert written - viewer.read < WRITTEN_AHEAD_BOUND  # the writer was held back
    assert growth["daphne"] < DAPHNE_BOUND
    assert growth["agent"] < AGENT_BOUND
    assert growth["redis"] < REDIS_BOUND
    assert still_unread > 0  # the interrupt overtook the output, as on a real terminal


async def test_a_viewer_too_slow_for_the_others_skips_ahead(
    slow_clients_stack: Stack, slow_clients_demo: dict[str, Any]
) -> None:
    """The slow viewer leads the session (it started it); a fast one on another worker sets the pace."""
    stack, demo = slow_clients_stack, slow_clients_demo
    async with slow_viewer(stack, demo, 0) as slow, fast_viewer(stack, demo, 1) as fast:
        script = "stty -echo; echo READY; read go; exec yes abcdefg"
        await slow.send(type="start", cmd="/bin/sh", args=["-c", script])
        tag = (await slow.frame())["tag"]
        await fast.send(type="connect", tag=tag)
        await fast.read_until(b"READY\r\n")  # typed before this, "go" would be echoed
        await fast.type("go\n")
        # Ten times the replay buffer goes by the fast viewer, so the slow one must lose some.
        while len(fast.output) < 10 * MIB:
            await fast.recv()
        assert fast.missed == []  # Terminal checked that its offsets are contiguous
        flood = bytes(fast.output).split(b"READY\r\n", 1)[1]
        assert flood.startswith(b"abcdefg\r\n" * 1000)
        assert set(flood.split(b"\r\n")[:-1]) == {b"abcdefg"}
        while not slow.missed:
            frame = await slow.frame()
            assert frame["type"] in ("output", "missed", "ping"), frame
        await fast.send(type="kill")
        assert (await fast.expect("exit", timeout=60))["exit_code"] == 137
    assert slow.missed[0]["bytes"] > 0
    print(f"fast viewer: {len(fast.output)} bytes; slow viewer: {slow.read} bytes, then {slow.missed[0]}")


async def test_a_viewer_that_stalls_and_recovers_gets_every_byte(
    flow_stack: Stack, flow_demo: dict[str, Any]
) -> None:
    """A lone viewer that stops reading for a while, then reads fast, misses nothing of 6 MB."""
    script = (
        "stty raw -echo; echo READY; read go; "
        "head -c 2000000 /dev/urandom | od -An -v -tx1 -w32; printf '<END>'"
    )
    async with fast_viewer(flow_stack, flow_demo, 0) as term:
        await term.start(cmd="/bin/sh", args=["-c", script])
        await term.read_until(b"READY\n")  # typed before this, "go" would be echoed
        await term.type("go\n")
        await asyncio.sleep(3)  # not reading: the socket's buffers fill and the writer blocks
        output = await term.read_until(b"<END>", timeout=120)
    assert term.missed == []
    lines = output[output.index(b"READY\n") + 6 : output.index(b"<END>")].split(b"\n")
    assert len(lines) == 62_501
    assert lines[-1] == b""
    assert all(len(line) == 96 for line in lines[:-1])


async def test_a_client_still_reading_when_the_process_exits_gets_the_rest_and_the_exit(
    flow_stack: Stack, flow_demo: dict[str, Any]
) -> None:
    """The exit and the close frame wait behind megabytes the client reads at 1 MiB/s: the server
    must not give up on the close handshake before the client gets there."""
    script = "stty raw -echo; echo READY; read go; head -c 3000000 /dev/zero | tr '\\0' x; exit 3"
    async with slow_viewer(flow_stack, flow_demo, 0, rate=MIB) as viewer:
        await viewer.send(type="start", cmd="/bin/sh", args=["-c", script])
        assert (await viewer.frame())["type"] == "started"
        while viewer.read < len(b"READY\n"):  # typed before this, "go" would be echoed
            await viewer.frame()
        await viewer.send(type="input", data=base64.b64encode(b"go\n").decode())
        await asyncio.sleep(2)  # not reading: the output piles up in the socket's buffers
        while (frame := await viewer.frame())["type"] != "exit":
            assert frame["type"] in ("output", "ping"), frame
    assert frame["exit_code"] == 3
    assert viewer.read == len(b"READY\n") + 3_000_000
    assert viewer.missed == []
