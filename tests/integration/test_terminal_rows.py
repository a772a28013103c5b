"""On the real stack, a terminal that ends while nobody is connected (so no consumer sees its exit)
has its row closed by the host agent's heartbeats, which list the live sessions' tags."""

from __future__ import annotations

from typing import Any

import grpc
import psycopg
import pytest
from websockets.asyncio.client import connect

from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.support.hostagent import token_metadata
from tests.support.polling import wait_until
from tests.support.stack import Stack
from tests.support.terminal import Terminal

pytestmark = [pytest.mark.timeout(120)]


def ended_at(stack: Stack, capsule_id: str, tag: str) -> Any:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT ended_at FROM capsules_terminalsession WHERE sandbox_id = %s AND tag = %s",
            (capsule_id, tag),
        ).fetchone()
    assert row is not None, f"no row for {capsule_id}/{tag}"
    return row[0]


async def test_a_session_that_ends_unwatched_is_closed_by_the_heartbeats(
    stack: Stack, demo: dict[str, Any]
) -> None:
    log = stack.data_dir / f"daphne-{stack.workers[0][0]}.log"
    start = log.stat().st_size
    url = f"{stack.ws_url()}/v1/capsules/{demo['capsule_id']}/pty"
    async with connect(url, additional_headers=[("X-API-Key", demo["api_key"])]) as websocket:
        started = await Terminal.over_websocket(websocket).start(cmd="/bin/sleep", args=["600"])
    tag = started["tag"]
    assert ended_at(stack, demo["capsule_id"], tag) is None  # it outlives its socket
    async with grpc.aio.insecure_channel(stack.agent_address) as channel:
        kill = pb.PtyKillRequest(sandbox_id=demo["capsule_id"], tag=tag)
        await pb_grpc.HostAgentStub(channel).PtyKill(
            kill, timeout=10, metadata=token_metadata(stack.agent_token)
        )
    await wait_until(lambda: ended_at(stack, demo["capsule_id"], tag) is not None)
    # Closed by a heartbeat (daphne serves them), not by a consumer seeing the exit.
    with log.open("rb") as file:
        file.seek(start)
        assert b"terminal session(s) closed, 0 reopened, 0 found, as its agent reports" in file.read()
