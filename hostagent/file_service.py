"""The agent's file RPCs: stat, list, mkdir, remove, and streamed reads and writes.

A mixin of the servicer (hostagent/server.py), like hostagent/process_service.py. The work is
hostagent/files.py's (a helper process inside the capsule per call); this module turns requests
into its calls and its AgentErrors into statuses, in one decorator for the unary calls.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from hostagent.errors import AgentError, FailedPrecondition, InvalidArgument
from hostagent.files import Files
from protos import hostagent_pb2 as pb
from protos import rules

Context = grpc.aio.ServicerContext[Any, Any]
Request = TypeVar("Request")
Response = TypeVar("Response")
Method = Callable[[Any, Request, Context], Awaitable[Response]]


def aborts_on_agent_error(method: Method[Request, Response]) -> Method[Request, Response]:
    """The call's AgentError becomes its status and message."""

    @functools.wraps(method)
    async def call(self: Any, request: Request, context: Context) -> Response:
        try:
            return await method(self, request, context)
        except AgentError as error:
            await context.abort(error.code, error.message)
            raise  # abort raises; this only tells the type checker so

    return call


class FileServicer:
    files: Files

    @aborts_on_agent_error
    async def StatPath(self, request: pb.FilePathRequest, context: Context) -> pb.StatPathResponse:
        entry = await self.files.stat(request.sandbox_id, request.path, request.user)
        return pb.StatPathResponse(entry=entry)

    @aborts_on_agent_error
    async def ListDir(self, request: pb.ListDirRequest, context: Context) -> pb.ListDirResponse:
        entries = await self.files.list(request.sandbox_id, request.path, request.depth, request.user)
        return pb.ListDirResponse(entries=entries)

    @aborts_on_agent_error
    async def MakeDir(self, request: pb.FilePathRequest, context: Context) -> pb.MakeDirResponse:
        entry = await self.files.make_dir(request.sandbox_id, request.path, request.user)
        return pb.MakeDirResponse(entry=entry)

    @aborts_on_agent_error
    async def RemovePath(self, request: pb.FilePathRequest, context: Context) -> pb.RemovePathResponse:
        await self.files.remove(request.sandbox_id, request.path, request.user)
        return pb.RemovePathResponse()

    async def ReadFile(self, request: pb.FilePathRequest, context: Context) -> AsyncIterator[pb.FileChunk]:
        chunks = self.files.read(request.sandbox_id, request.path, request.user)
        try:
            # Each chunk is handed to gRPC (and its flow control) before the next is read.
            async for chunk in chunks:
                yield chunk
        except AgentError as error:
            await context.abort(error.code, error.message)
        finally:
            await chunks.aclose()

    async def WriteFile(
        self, requests: AsyncIterator[pb.WriteFileRequest], context: Context
    ) -> pb.WriteFileResponse:
        ready = False

        async def on_ready() -> None:
            nonlocal ready
            # The client sends data only after this: a write refused before (a bad path, a
            # directory) ends with no data in flight, and the client sees the status as sent.
            await context.send_initial_metadata(((rules.WRITE_READY_KEY, "1"),))
            ready = True

        try:
            first = await anext(aiter(requests), None)
            if first is None or first.WhichOneof("part") != "start":
                raise InvalidArgument("the first message of a write must be `start`")
            entry = await self.files.write(first.start.sandbox_id, first.start, _data(requests), on_ready)
        except AgentError as error:
            if ready:
                # Ended while the client may still be writing: grpc.aio would report its next
                # write's failure ("Internal error from Core") instead of this status. So the
                # rest is read and dropped first (a full disk mid-upload is the usual case).
                async for _ in requests:
                    pass
            await context.abort(error.code, error.message)
            raise
        return pb.WriteFileResponse(entry=entry)


async def _data(requests: AsyncIterator[pb.WriteFileRequest]) -> AsyncIterator[bytes]:
    """The data of a write up to its `end`; a stream that stops short is an error (grpc.aio ends
    a cancelled call's requests as it ends a finished one's, so only `end` tells them apart)."""
    async for request in requests:
        part = request.WhichOneof("part")
        if part == "end":
            return
        if part != "data":
            raise InvalidArgument("after `start`, a write takes `data` messages and then `end`")
        yield request.data
    raise FailedPrecondition("the write stopped before its `end`; the file is unchanged")
