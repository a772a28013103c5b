"""Markers in a recording (a viewer joined or left): the agent's PtyMark, never in a viewer's way.

`mark_soon` starts the call as a task it keeps (so it is not collected half-way) and returns at
once: a join or a leave never waits for the agent, and an agent that is away or slow costs a
log line, not the viewer's connection.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from capsules.agents import aio_stub_for, call_metadata, rpc_timeout
from protos import hostagent_pb2 as pb

log = logging.getLogger(__name__)

MAX_LABEL = 256
_pending: set[asyncio.Task[bool]] = set()


async def mark(host_address: str, sandbox_id: str, tag: str, label: str) -> bool:
    """Adds `label` to the recording of `tag`; whether the session is recorded (False when the
    agent cannot be reached)."""
    stub = aio_stub_for(host_address)
    try:
        answer = await stub.PtyMark(
            pb.PtyMarkRequest(sandbox_id=sandbox_id, tag=tag, label=label[:MAX_LABEL]),
            timeout=rpc_timeout(),
            metadata=call_metadata(),
        )
    except grpc.aio.AioRpcError as exc:
        # NOT_FOUND: the starter joins before its session exists (its start is in the header).
        level = logging.DEBUG if exc.code() == grpc.StatusCode.NOT_FOUND else logging.INFO
        log.log(level, "recording marker %r for %s/%s not added: %s", label, sandbox_id, tag, exc.details())
        return False
    return bool(answer.recorded)


def mark_soon(host_address: str, sandbox_id: str, tag: str, label: str) -> None:
    task = asyncio.get_running_loop().create_task(mark(host_address, sandbox_id, tag, label))
    _pending.add(task)
    task.add_done_callback(_pending.discard)
