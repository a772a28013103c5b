"""Reading a session's recent output from the host agent's replay buffer.

Viewers use it to start where they asked (``connect`` with an offset), to show
a newcomer the screen, and to fill a gap left by a lost channel-layer message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from capsules.agents import call_metadata, rpc_timeout
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc

READ_BYTES = 256 * 1024


@dataclass(frozen=True)
class Chunk:
    data: bytes
    offset: int


@dataclass(frozen=True)
class Missed:
    """``bytes`` before ``offset`` are no longer held by the agent."""

    offset: int
    bytes: int


@dataclass(frozen=True)
class Ended:
    """The process has exited; all its output up to ``offset`` has been read."""

    offset: int
    exit_code: int


async def read_output(
    stub: pb_grpc.HostAgentAsyncStub,
    sandbox_id: str,
    tag: str,
    offset: int,
    until: int | None = None,
    *,
    neutralize_queries: bool = False,
) -> AsyncIterator[Chunk | Missed | Ended]:
    """Output from ``offset`` up to ``until`` (or to the end of the output at the first read)."""
    while until is None or offset < until:
        wanted = READ_BYTES if until is None else min(READ_BYTES, until - offset)
        reply = await stub.PtyRead(
            pb.PtyReadRequest(
                sandbox_id=sandbox_id,
                tag=tag,
                offset=offset,
                max_bytes=wanted,
                neutralize_queries=neutralize_queries,
            ),
            timeout=rpc_timeout(),
            metadata=call_metadata(),
        )
        if reply.offset > offset:
            yield Missed(offset=reply.offset, bytes=reply.offset - offset)
            offset = reply.offset
        if reply.data:
            yield Chunk(data=reply.data, offset=offset)
            offset += len(reply.data)
        if until is None:  # a running process may write on forever: stop where it was
            until = reply.end_offset
        if offset >= reply.end_offset:
            if reply.exited:
                yield Ended(offset=offset, exit_code=reply.exit_code)
            return
