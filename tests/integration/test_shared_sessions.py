"""One terminal session served by several daphne workers over Redis, with every byte accounted for."""

from __future__ import annotations

import asyncio
import hashlib
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.support.stack import Stack, running_stack
from tests.support.terminal import JSON_DIALECT, Terminal

pytestmark = [pytest.mark.timeout(180)]

Open = Callable[..., Any]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two daphne workers on one database and one Redis, and a host agent with an 8 MiB replay buffer."""
    with running_stack(
        Path(tmp_path_factory.mktemp("cluster")),
        workers=2,
        agent_args=["--replay-buffer", str(8 << 20)],
        ping=(20, 30),  # as in production: the 20 MB test keeps the sockets busy for a while
    ) as running:
        yield running


@pytest.fixture(scope="module")
def cluster_demo(cluster: Stack) -> dict[str, Any]:
    return cluster.demo()


@pytest.fixture
def viewer(cluster: Stack, cluster_demo: dict[str, Any]) -> Open:
    @asynccontextmanager
    async def open_(worker: int) -> AsyncIterator[Terminal]:
        url = f"{cluster.ws_url(worker)}/v1/capsules/{cluster_demo['capsule_id']}/pty"
        headers = [("X-API-Key", cluster_demo["api_key"])]
        async with connect(
            url, subprotocols=JSON_DIALECT, additional_headers=headers, max_size=None
        ) as websocket:
            yield Terminal.over_websocket(websocket)

    return open_


async def test_two_workers_share_a_session_both_ways(viewer: Open) -> None:
    async with viewer(0) as first, viewer(1) as second:
        tag = (await first.start())["tag"]
        await second.send(type="connect", tag=tag)
        await second.type("echo from-$((1+1))\n")
        await first.read_until(b"from-2")
        await second.read_until(b"from-2")
        await first.type("echo from-$((0+1))\n")
        await first.read_until(b"from-1")
        await second.read_until(b"from-1")


async def test_resume_by_offset_after_a_dropped_socket(viewer: Open) -> None:
    script = "stty raw -echo; seq 1 20000; printf '<END>'; read x"
    async with viewer(0) as first:
        tag = (await first.start(cmd="/bin/sh", args=["-c", script]))["tag"]
        output = await first.read_until(b"<END>")
    resume_at = len(output) // 3
    async with viewer(1) as again:
        await again.send(type="connect", tag=tag, offset=resume_at)
        assert await again.read_until(b"<END>") == output[resume_at:]
        await again.type("\n")
        assert (await again.expect("exit"))["exit_code"] == 0


async def test_exit_reaches_three_viewers_on_two_workers(viewer: Open) -> None:
    async with viewer(0) as first, viewer(1) as second, viewer(1) as third:
        tag = (await first.start(cmd="/bin/sh", args=["-c", "read x; exit 4"]))["tag"]
        for other in (second, third):
            await other.send(type="connect", tag=tag)
        await asyncio.sleep(0.5)  # let both joins land before the exit; a late one gets the code anyway
        await third.type("go\n")
        codes = [(await term.expect("exit"))["exit_code"] for term in (first, second, third)]
        assert codes == [4, 4, 4]


async def test_a_multibyte_character_split_across_chunks_arrives_whole(viewer: Open) -> None:
    # 65,535 ASCII bytes then "é": the agent reads at most 64 KiB at a time, so the two bytes
    # of é can land in different chunks; offsets and bytes must still join up exactly.
    script = "stty raw -echo; head -c 65535 /dev/zero | tr '\\0' a; printf '\\303\\251<END>'; read x"
    async with viewer(0) as first, viewer(1) as second:
        tag = (await first.start(cmd="/bin/sh", args=["-c", script]))["tag"]
        await second.send(type="connect", tag=tag, offset=0)
        for term in (first, second):
            output = await term.read_until(b"<END>")
            assert output == b"a" * 65535 + "é".encode() + b"<END>"
            assert output.decode("utf-8").endswith("é<END>")


async def test_killing_the_leading_worker_loses_and_repeats_nothing(cluster: Stack, viewer: Open) -> None:
    """20 MB of random bytes; the worker leading the session is SIGKILLed while they flow."""
    script = (
        "stty raw -echo; head -c 20000000 /dev/urandom > /tmp/big; read go; "
        "printf '<BEGIN>'; cat /tmp/big; printf '<END>'; sha256sum /tmp/big | cut -c1-64; read x"
    )
    leader_worker = cluster.start_worker()  # a worker of its own, to kill
    async with viewer(leader_worker) as leader, viewer(1) as survivor:
        tag = (await leader.start(cmd="/bin/sh", args=["-c", script]))["tag"]
        await survivor.send(type="connect", tag=tag)
        await survivor.type("go\n")
        await survivor.read_until(b"<BEGIN>", timeout=60)
        while len(survivor.output) < 3_000_000:  # well into the flow
            await survivor.recv()
        _, proc = cluster.workers[leader_worker]
        proc.send_signal(signal.SIGKILL)
        await survivor.read_until(b"<END>", timeout=120)
        while len(digest_line := bytes(survivor.output).rsplit(b"<END>", 1)[1].strip()) < 64:
            await survivor.recv()
        output = bytes(survivor.output)
    assert survivor.missed == []
    blob = output[output.index(b"<BEGIN>") + 7 : output.rindex(b"<END>")]
    assert len(blob) == 20_000_000
    assert hashlib.sha256(blob).hexdigest().encode() == digest_line[:64]
