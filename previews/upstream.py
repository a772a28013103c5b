"""A TCP connection to a port inside a capsule, through its host agent's PortForward stream.

One gRPC message is in flight each way: `send` waits for the agent to take a chunk, and the
agent reads the capsule's server only as fast as `receive` is called, so neither side buffers
more than a chunk or two, whatever the sizes of the bodies.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from capsules.agents import aio_stub_for, call_metadata, describe_status, host_down
from previews.access import Denied
from protos import hostagent_pb2 as pb
from protos import rules

log = logging.getLogger(__name__)

REFUSED_KEY = rules.PORT_REFUSED_KEY


def _denied(error: grpc.aio.AioRpcError) -> Denied:
    code, details = error.code(), error.details() or ""
    # grpc-stubs types metadata entries loosely; at runtime each is a (key, value) tuple.
    entries: list[Any] = list(error.trailing_metadata() or ())
    refused = any(key == REFUSED_KEY for key, _value in entries)
    if refused:
        return Denied(502, "bad_gateway", details)
    if code == grpc.StatusCode.NOT_FOUND:
        return Denied(502, "agent_error", f"the capsule's host does not have it: {details}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return Denied(409, "invalid_state", details)
    if host_down(code):
        return Denied(503, "host_unavailable", describe_status(code, details))
    return Denied(502, "agent_error", describe_status(code, details))


class Upstream:
    """Bytes to and from the capsule's server; `Denied` when the stream fails."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self.eof = False

    @classmethod
    async def connect(cls, address: str, sandbox_id: str, port: int) -> Upstream:
        """Open the stream and wait for the agent's `connected` (or its refusal)."""
        call = aio_stub_for(address).PortForward(None, metadata=call_metadata())
        upstream = cls(call)
        try:
            await call.write(pb.PortForwardRequest(sandbox_id=sandbox_id, port=port))
            first = await call.read()
        except grpc.aio.AioRpcError as error:
            raise _denied(error) from None
        if first is grpc.aio.EOF or not first.connected:  # type: ignore[attr-defined]
            call.cancel()
            raise Denied(502, "agent_error", "the host agent ended the preview stream before connecting")
        return upstream

    async def send(self, data: bytes) -> None:
        try:
            await self._call.write(pb.PortForwardRequest(data=data))
        except grpc.aio.AioRpcError as error:
            raise _denied(error) from None
        except grpc.aio.UsageError:
            raise Denied(502, "bad_gateway", "the connection to the capsule's server closed") from None

    async def close_write(self) -> None:
        """Half-close: the capsule's server reads EOF; its answer still comes."""
        try:
            await self._call.write(pb.PortForwardRequest(close_write=True))
            await self._call.done_writing()
        except (grpc.aio.AioRpcError, grpc.aio.UsageError):
            pass  # the stream is over already: the reading side says why

    async def receive(self) -> bytes:
        """The next bytes of the capsule's server; b"" once it closed its side."""
        if self.eof:
            return b""
        try:
            response = await self._call.read()
        except grpc.aio.AioRpcError as error:
            raise _denied(error) from None
        if response is grpc.aio.EOF or response.eof:  # type: ignore[attr-defined]
            self.eof = True
            return b""
        return bytes(response.data)

    def close(self) -> None:
        """End the stream at once (the agent closes its connection to the capsule's server)."""
        self._call.cancel()
