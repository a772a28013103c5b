"""File calls on a capsule through its host agent: the one place the API's file views call.

The agent does the work inside the capsule (hostagent/files.py); here: the capsule must be
running on a reachable host, each call has the agents' deadline and token (capsules/agents.py),
and an agent's refusal becomes an ActionError whose code the API answers (capsules/api/errors.py).
Listing, mkdir and remove are synchronous calls; reads and writes stream on the event loop with
grpc.aio, a chunk at a time in each direction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from capsules import actions, agents
from capsules.actions import ActionError
from capsules.models import Sandbox
from protos import hostagent_pb2 as pb
from protos import rules

CHUNK = 64 * 1024
READY = (rules.WRITE_READY_KEY, "1")
# What a grpc.aio stream's read() answers at its end (absent from the type stubs).
EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]


class TooLarge(Exception):
    """An upload passed its size limit (the API answers 413 with the limit)."""


def file_capsule(sandbox: Sandbox) -> Sandbox:
    """The capsule as it is now, if file calls can reach it: running, on a reachable host."""
    capsule = Sandbox.objects.select_related("host").filter(pk=sandbox.pk).first()
    if capsule is None:
        raise ActionError("not_found", f"capsule {sandbox.pk} not found")
    actions.agent_address(capsule, "reach its files")
    actions.record_activity(capsule.pk)
    return capsule


# The agent's refusals of a file call: a path that is a directory, not one, or not a file is the
# request's doing; so is a listing too large (RESOURCE_EXHAUSTED but for a full disk, below).
FILE_REFUSALS = {
    **agents.REFUSALS,
    grpc.StatusCode.PERMISSION_DENIED: "forbidden",
    grpc.StatusCode.FAILED_PRECONDITION: "invalid_request",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "invalid_request",
}


def failure(error: grpc.RpcError) -> ActionError:
    """What the caller is told of a failed file call, in the agent's words where it gave them."""
    code, detail = agents.status_of(error)
    if code == grpc.StatusCode.FAILED_PRECONDITION and detail.endswith(" is paused"):
        return ActionError("invalid_state", detail)  # paused after our check
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "no space left" in detail:
        return ActionError("insufficient_storage", detail)
    return ActionError(*agents.failure(error, "finish the file call", FILE_REFUSALS))


def entry_json(entry: pb.FileEntry) -> dict[str, Any]:
    """A FileEntry as the API (and Wrenn's SDK model of the same name) has it."""
    return {
        "name": entry.name,
        "path": entry.path,
        "type": entry.type,
        "size": entry.size,
        "mode": entry.mode,
        "permissions": entry.permissions,
        "owner": entry.owner,
        "group": entry.group,
        "modified_at": entry.modified_at,
        "symlink_target": entry.symlink_target or None,
    }


def _stub(capsule: Sandbox) -> Any:
    assert capsule.host is not None  # noqa: S101 - file_capsule checked it
    return agents.stub_for(capsule.host.address)


def _unary(capsule: Sandbox, method: str, request: Any) -> Any:
    try:
        return getattr(_stub(capsule), method)(
            request, timeout=agents.rpc_timeout(), metadata=agents.call_metadata()
        )
    except grpc.RpcError as error:
        raise failure(error) from None


def list_dir(sandbox: Sandbox, path: str, depth: int) -> list[dict[str, Any]]:
    capsule = file_capsule(sandbox)
    request = pb.ListDirRequest(sandbox_id=capsule.pk, path=path, depth=depth)
    return [entry_json(e) for e in _unary(capsule, "ListDir", request).entries]


def make_dir(sandbox: Sandbox, path: str) -> dict[str, Any]:
    capsule = file_capsule(sandbox)
    return entry_json(_unary(capsule, "MakeDir", pb.FilePathRequest(sandbox_id=capsule.pk, path=path)).entry)


def remove(sandbox: Sandbox, path: str) -> None:
    capsule = file_capsule(sandbox)
    _unary(capsule, "RemovePath", pb.FilePathRequest(sandbox_id=capsule.pk, path=path))


# Streams, on the event loop (daphne's): the views reach them through async_to_sync.


class Download:
    """An open ReadFile call: the file's entry, then its bytes as the client takes them."""

    def __init__(self, call: Any, entry: pb.FileEntry) -> None:
        self._call = call
        self.entry = entry

    @classmethod
    async def open(cls, address: str, sandbox_id: str, path: str) -> Download:
        """The call, once its first message (the entry) is in: a refusal raises ActionError here,
        before the response's status is chosen."""
        stub = agents.aio_stub_for(address)
        call = stub.ReadFile(
            pb.FilePathRequest(sandbox_id=sandbox_id, path=path),
            timeout=None,
            metadata=agents.call_metadata(),
        )
        try:
            first = await _with_deadline(call.read())
        except grpc.RpcError as error:
            raise failure(error) from None
        if first is EOF or first.WhichOneof("part") != "entry":
            call.cancel()
            raise ActionError("agent_error", "the host agent's read began without the file's entry")
        return cls(call, first.entry)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes; one message is read only once the previous one was taken (flow control)."""
        try:
            while True:
                message = await _with_deadline(self._call.read())
                if message is EOF:
                    return
                yield message.data
        except grpc.RpcError as error:
            # Too late for a status: the body is cut short, which the client sees as an error.
            raise failure(error) from None
        finally:
            self._call.cancel()


async def open_download(capsule: Sandbox, path: str) -> Download:
    assert capsule.host is not None  # noqa: S101 - file_capsule checked it
    return await Download.open(capsule.host.address, capsule.pk, path)


async def upload(capsule: Sandbox, path: str, chunks: AsyncIterator[bytes], limit: int) -> dict[str, Any]:
    """`chunks` into the capsule's file at `path`, each handed to gRPC before the next is read.

    TooLarge past `limit` bytes; a refusal (bad path, a directory) comes before any data is
    read. The agent commits the file only at `end`: cut short, it stays as it was.
    """
    assert capsule.host is not None  # noqa: S101 - file_capsule checked it
    stub = agents.aio_stub_for(capsule.host.address)
    call = stub.WriteFile(None, timeout=None, metadata=agents.call_metadata())
    done = False
    try:
        start = pb.WriteFileStart(sandbox_id=capsule.pk, path=path)
        await _with_deadline(call.write(pb.WriteFileRequest(start=start)))
        if READY in tuple(await _with_deadline(call.initial_metadata()) or ()):
            size = 0
            async for data in chunks:
                size += len(data)
                if size > limit:
                    raise TooLarge
                for offset in range(0, len(data), CHUNK):
                    await _with_deadline(call.write(pb.WriteFileRequest(data=data[offset : offset + CHUNK])))
            await _with_deadline(call.write(pb.WriteFileRequest(end=True)))
            await call.done_writing()
        response = await _with_deadline(call)
        done = True
        return entry_json(response.entry)
    except grpc.RpcError as error:
        raise failure(error) from None
    finally:
        if not done:
            call.cancel()


async def _with_deadline(awaitable: Any) -> Any:
    """One step of a stream under the agents' deadline: a stalled agent fails the call, while a
    long transfer whose every step moves is never cut by a deadline on the whole of it."""
    try:
        async with asyncio.timeout(agents.rpc_timeout()):
            return await awaitable
    except TimeoutError:
        raise ActionError("host_unavailable", agents.HOST_TIMED_OUT) from None
