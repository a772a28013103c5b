"""The gRPC stream worker: reads one PTY session from its host agent and publishes it.

Output goes to the channel-layer group of the session with its byte offset, so
every viewer of the session (on this worker or another) sends the same bytes and
can tell a duplicate or a gap from the offsets alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from channels.layers import BaseChannelLayer

from capsules.agents import call_metadata, describe
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

# Channel-layer event types; each is handled by the consumer method of the same
# name with the dot replaced (terminal_output, ...).
OUTPUT_EVENT = "terminal.output"
EXIT_EVENT = "terminal.exit"
ERROR_EVENT = "terminal.error"
MARK_EVENT = "terminal.mark"
# After output goes quiet for this long, the leader publishes where the output ends, so a
# viewer whose channel dropped the last chunks of a burst notices and refetches them.
MARK_AFTER_QUIET = 0.05


def group_name(sandbox_id: str, tag: str) -> str:
    """The group of one terminal session (ASCII; ids and tags are validated upstream)."""
    return f"pty.{sandbox_id}.{tag}"


def output_event(data: bytes, offset: int) -> dict[str, object]:
    # Raw bytes: the channel layers carry them as they are (msgpack in Redis), and each viewer
    # encodes them for its own client (base64 in JSON, or a binary frame).
    return {"type": OUTPUT_EVENT, "data": data, "offset": offset}


class StreamFailed(Exception):
    def __init__(self, message: str, *, attached: bool) -> None:
        super().__init__(message)
        # False when the stream failed before its first event: the attach itself
        # was refused (unknown tag, host down), and only the caller needs to know.
        self.attached = attached


@dataclass(frozen=True)
class LeaderHooks:
    """What the stream worker tells, and asks, the viewer that runs it."""

    started: Callable[[pb.PtyStarted], Awaitable[None]]
    output: Callable[[], Awaitable[None]]  # some output went by
    exited: Callable[[int], Awaitable[None]]
    # Returns when the viewers can take more than ``end`` bytes; until it does, the stream is
    # not read, so the agent stops reading the terminal and the process blocks.
    pace: Callable[[int], Awaitable[None]]
    # Hands an output event to the leading viewer itself, without the round trip through the
    # channel layer (a copy that comes back is dropped by its offset).
    deliver: Callable[[dict[str, Any]], Awaitable[None]]
    # Whether anyone else may be watching: output and marks go to the group only then.
    shared: Callable[[], bool]


async def lead(
    stub: pb_grpc.HostAgentAsyncStub,
    request: pb.PtyAttachRequest,
    layer: BaseChannelLayer,
    group: str,
    hooks: LeaderHooks,
) -> int:
    """Runs until the process exits (its exit event is published; the code returned) or is cancelled."""
    call = stub.PtyAttach(request, metadata=call_metadata())
    attached = False
    end = request.from_offset
    loop = asyncio.get_running_loop()
    mark: asyncio.TimerHandle | None = None
    marking: set[asyncio.Task[None]] = set()

    def publish_mark(offset: int) -> None:
        if not hooks.shared():
            return
        task = loop.create_task(layer.group_send(group, {"type": MARK_EVENT, "offset": offset}))
        marking.add(task)
        task.add_done_callback(marking.discard)

    try:
        async for event in call:
            kind = event.WhichOneof("event")
            if kind == "output":
                attached = True
                chunk = event.output
                end = chunk.offset + len(chunk.data)
                published = output_event(chunk.data, chunk.offset)
                await hooks.deliver(published)
                if hooks.shared():
                    await layer.group_send(group, published)
                if mark is not None:
                    mark.cancel()
                mark = loop.call_later(MARK_AFTER_QUIET, publish_mark, end)
                await hooks.output()
                await hooks.pace(end)
            elif kind == "started":
                attached = True
                await hooks.started(event.started)
            elif kind == "missed":
                # The agent no longer holds bytes this stream was asked to resume from.
                # Viewers see the gap in the offsets and report it themselves.
                attached = True
            elif kind == "exited":
                # Recorded before it is published: viewers close (and cancel this) on the event.
                await hooks.exited(event.exited.exit_code)
                exit_event = {"type": EXIT_EVENT, "exit_code": event.exited.exit_code, "offset": end}
                await layer.group_send(group, exit_event)
                return int(event.exited.exit_code)
        raise StreamFailed("the sandbox host closed the terminal stream", attached=attached)
    except grpc.aio.AioRpcError as exc:
        log.info("pty stream %s ended: %s %s", group, exc.code().name, exc.details())
        raise StreamFailed(describe(exc), attached=attached) from None
    finally:
        call.cancel()
        if mark is not None:
            mark.cancel()
        for task in marking:  # owned here: none outlives the stream
            task.cancel()
