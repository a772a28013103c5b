"""One connection's input, resizes and kills, sent to the host agent in the order received.

Nothing is dropped: consecutive input frames are merged into one op, while a
resize or kill keeps its place in the line. When the host agent falls behind,
``wait_for_room`` holds the socket reader back instead of discarding frames.

The ops travel on one ``PtyInput`` stream per connection (``AgentStream``), one at a time,
each waiting for its acknowledgement: a message and its ack on an open stream cost each side
a fraction of what a unary call per keystroke does (figures: docs/performance.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from capsules.agents import HOST_TIMED_OUT, call_metadata, describe, describe_status, rpc_timeout
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc

from .protocol import MAX_FRAME_BYTES

log = logging.getLogger(__name__)

# Bytes of input accepted but not yet sent before the reader waits.
HIGH_WATER = 1024 * 1024
# Input frames are merged into one op until it holds a frame's worth (the one frame limit of the
# protocol), which keeps each message well under gRPC's limit.
MAX_BATCH = MAX_FRAME_BYTES
# An open input stream costs memory in daphne and in the agent, which thousands of idle
# sessions should not pay. A stream with no op for this long is closed and the next op opens
# another: the first keystroke after a pause then pays for a call setup, the ones that follow
# it do not.
IDLE_CLOSE = 1.0


@dataclass(frozen=True)
class Op:
    kind: str  # "input", "resize" or "kill"
    data: bytes = b""
    cols: int = 0
    rows: int = 0


Sender = Callable[[Op], Awaitable[None]]


class InputPump:
    def __init__(self, send: Sender) -> None:
        self._send = send
        self._queue: deque[Op] = deque()
        self._pending_bytes = 0
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, op: Op) -> None:
        self._queue.append(op)
        self._pending_bytes += len(op.data)
        if self._pending_bytes >= HIGH_WATER:
            self._room.clear()
        self._idle.clear()
        self._wakeup.set()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    async def drained(self) -> None:
        await self._idle.wait()

    def _next(self) -> Op:
        op = self._queue.popleft()
        if op.kind != "input":
            return op
        # Merge the run of input frames at the head of the line, and only that run.
        chunks = [op.data]
        size = len(op.data)
        while self._queue and self._queue[0].kind == "input" and size < MAX_BATCH:
            more = self._queue.popleft()
            chunks.append(more.data)
            size += len(more.data)
        return Op("input", data=b"".join(chunks))

    async def run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            op = self._next()
            try:
                await self._send(op)
            finally:
                self._pending_bytes -= len(op.data)
                if self._pending_bytes < HIGH_WATER:
                    self._room.set()


class OpFailed(Exception):
    """The host agent did not apply an op; the message says why, for the client."""


class AgentStream:
    """One connection's ``PtyInput`` stream to the host agent, opened on the first op.

    ``send`` returns once the agent has applied the op, or raises OpFailed (its error, or no
    answer within the agent deadline, ``rpc_timeout()``). After a broken or silent stream, or
    ``idle_close`` seconds without an op, the next op opens a new one.
    """

    def __init__(
        self, stub: pb_grpc.HostAgentAsyncStub, sandbox_id: str, tag: str, *, idle_close: float = IDLE_CLOSE
    ) -> None:
        self._stub = stub
        self._sandbox_id = sandbox_id
        self._tag = tag
        self._idle_close = idle_close
        self._call: grpc.aio.StreamStreamCall[pb.PtyInputRequest, pb.PtyInputAck] | None = None
        self._idle: asyncio.TimerHandle | None = None

    @property
    def open(self) -> bool:
        return self._call is not None

    async def send(self, op: Op) -> None:
        if self._idle is not None:
            self._idle.cancel()
        try:
            await self._send(op)
        finally:
            if self._call is not None:
                self._idle = asyncio.get_running_loop().call_later(self._idle_close, self.close)

    async def _send(self, op: Op) -> None:
        if op.kind == "input":
            request = pb.PtyInputRequest(data=op.data)
        elif op.kind == "resize":
            request = pb.PtyInputRequest(resize=pb.PtySize(cols=op.cols, rows=op.rows))
        else:
            request = pb.PtyInputRequest(kill=True)
        if self._call is None:
            # No request iterator: each op is written to the call and its ack read back.
            self._call = self._stub.PtyInput(None, metadata=call_metadata())
            request.sandbox_id, request.tag = self._sandbox_id, self._tag
        call = self._call
        try:
            async with asyncio.timeout(rpc_timeout()):
                await call.write(request)
                ack = await call.read()
        except TimeoutError:
            self.close()
            raise OpFailed(HOST_TIMED_OUT) from None
        except grpc.aio.AioRpcError as exc:
            self.close()
            raise OpFailed(describe(exc)) from None
        except asyncio.InvalidStateError:  # the stream had already ended: say how
            self.close()
            raise OpFailed(describe_status(await call.code(), await call.details())) from None
        if not isinstance(ack, pb.PtyInputAck):  # the end of the stream, without an error
            self.close()
            raise OpFailed("the sandbox host closed the input stream")
        if ack.code:
            raise OpFailed(ack.message or f"status {ack.code}")

    def close(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._call is not None:
            self._call.cancel()
            self._call = None
