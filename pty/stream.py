"""The gRPC stream worker: reads one PTY session from its host agent and publishes it.

Output goes to the channel-layer group of the session, encoded once, so every
viewer of the session (on this worker or another) sends the same frames.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable

import grpc
from channels.layers import BaseChannelLayer

from capsules.agents import call_metadata
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc

from .hostagents import describe

log = logging.getLogger(__name__)

# Channel-layer event types; each is handled by the consumer method of the same
# name with the dot replaced (terminal_output, ...).
OUTPUT_EVENT = "terminal.output"
EXIT_EVENT = "terminal.exit"
ERROR_EVENT = "terminal.error"


def group_name(sandbox_id: str, tag: str) -> str:
    """The group of one terminal session (ASCII; ids and tags are validated upstream)."""
    return f"pty.{sandbox_id}.{tag}"


class StreamFailed(Exception):
    def __init__(self, message: str, *, attached: bool) -> None:
        super().__init__(message)
        # False when the stream failed before its first event: the attach itself
        # was refused (unknown tag, host down), and only the caller needs to know.
        self.attached = attached


async def lead(
    stub: pb_grpc.HostAgentStub,
    request: pb.PtyAttachRequest,
    layer: BaseChannelLayer,
    group: str,
    on_started: Callable[[pb.PtyStarted], Awaitable[None]],
    on_output: Callable[[], Awaitable[None]],
) -> int:
    """Runs until the process exits (its exit event is published; the code returned) or is cancelled."""
    call = stub.PtyAttach(request, metadata=call_metadata())
    attached = False
    try:
        async for event in call:
            kind = event.WhichOneof("event")
            if kind == "output":
                attached = True
                chunk = event.output
                await layer.group_send(
                    group,
                    {
                        "type": OUTPUT_EVENT,
                        "data": base64.b64encode(chunk.data).decode("ascii"),
                        "offset": chunk.offset,
                        "size": len(chunk.data),
                    },
                )
                await on_output()
            elif kind == "started":
                attached = True
                await on_started(event.started)
            elif kind == "exited":
                await layer.group_send(group, {"type": EXIT_EVENT, "exit_code": event.exited.exit_code})
                return int(event.exited.exit_code)
        raise StreamFailed("the sandbox host closed the terminal stream", attached=attached)
    except grpc.aio.AioRpcError as exc:
        log.info("pty stream %s ended: %s %s", group, exc.code().name, exc.details())
        raise StreamFailed(describe(exc), attached=attached) from None
    finally:
        call.cancel()
