"""The exec and process sockets: `…/exec/stream` runs a command and streams its output,
`…/processes/{pid or tag}/stream` streams a background process's output.

Wrenn's protocol, JSON text frames both ways. The client sends `{"type": "start", "cmd", "args"}`
first (exec only; optional `envs`, `cwd`, `user`, `timeout_sec`), and `{"type": "stop"}` to kill
the process group. The server sends `start {pid}`, then `stdout`/`stderr {data}` as text (each
stream decoded as UTF-8 across frames; invalid bytes become U+FFFD), `exit {exit_code}`, and
`error {data}` for anything refused, then closes. Each output frame also carries `offset` and
`end`, the byte range of the process's output it holds: a process socket given `?offset=N`
resumes there, with the replay rules of terminals. A command started on an exec socket belongs
to it: when the socket closes first, the process group is killed.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
from typing import Any
from urllib.parse import parse_qs

import grpc
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from capsules import agents
from capsules.actions import ActionError, agent_address, record_activity
from capsules.api.authentication import MISSING_CREDENTIALS
from capsules.processes import Command, Selector, agent_refusal, parse_selector
from capsules.services import find_capsule
from protos import hostagent_pb2 as pb
from protos import rules
from wrenn.flow import SendWindow, send_window

from .auth import SCOPE_AUTH_ERROR, SCOPE_CALLER, Caller

log = logging.getLogger(__name__)

# Longest text frame a client may send: a start with its arguments and environment.
MAX_FRAME = 256 * 1024
STREAM_TYPES = {pb.STDOUT: "stdout", pb.STDERR: "stderr"}


class Refused(Exception):
    """Why the socket cannot go on; `str()` is what the client is told."""


@database_sync_to_async
def _capsule_address(capsule_id: str, caller: Caller, verb: str) -> tuple[str, str]:
    """(capsule id, its agent's address) for the caller, or Refused with the API's words."""
    if caller.team_id is not None:
        sandbox = find_capsule(capsule_id, team_id=caller.team_id)
    else:
        sandbox = find_capsule(capsule_id, user=caller.user)
    if sandbox is None:
        raise Refused(f"capsule {capsule_id} not found")
    try:
        address = agent_address(sandbox, verb)
    except ActionError as exc:
        raise Refused(exc.message) from None
    record_activity(sandbox.pk)
    return sandbox.pk, address


class OutputFrames:
    """Output events as Wrenn's frames: each stream decoded as UTF-8 across its chunks."""

    def __init__(self) -> None:
        self._decoders = {
            stream: codecs.getincrementaldecoder("utf-8")(errors="replace") for stream in STREAM_TYPES
        }

    def frame(self, output: pb.ProcessOutput) -> dict[str, Any] | None:
        text = self._decoders[output.stream].decode(output.data)
        if not text:
            return None  # the start of a character that the next chunk completes
        end = output.offset + len(output.data)
        return {"type": STREAM_TYPES[output.stream], "data": text, "offset": output.offset, "end": end}

    def flush(self) -> list[dict[str, Any]]:
        frames = []
        for stream, decoder in self._decoders.items():
            rest = decoder.decode(b"", final=True)
            if rest:
                frames.append({"type": STREAM_TYPES[stream], "data": rest})
        return frames


class ProcessSocket(AsyncWebsocketConsumer):
    """What both sockets share: credentials, the capsule, sending within the flow window, and
    one relay task that ends with the socket."""

    verb = "run a command"

    async def connect(self) -> None:
        self.window: SendWindow | None = send_window(self.scope)
        self.relay: asyncio.Task[None] | None = None
        self.closing = False
        await self.accept()
        try:
            caller = self.scope.get(SCOPE_CALLER)
            auth_error = self.scope.get(SCOPE_AUTH_ERROR)
            if auth_error or caller is None:
                raise Refused(auth_error or MISSING_CREDENTIALS)
            self.caller: Caller = caller
            capsule_id = self.scope["url_route"]["kwargs"]["capsule_id"]
            self.sandbox_id, self.address = await _capsule_address(capsule_id, caller, self.verb)
            await self.ready()
        except Refused as exc:
            await self.fail(str(exc))

    async def ready(self) -> None:
        """The caller and capsule are known."""

    async def send_json(self, frame: dict[str, Any]) -> None:
        if self.window is not None and not self.window.writable:
            await self.window.wait()
        await self.send(text_data=json.dumps(frame))

    async def fail(self, message: str) -> None:
        """An `error` frame, then the end of the socket."""
        if self.closing:
            return
        self.closing = True
        await self.send_json({"type": "error", "data": message})
        await self.close(1000)

    async def disconnect(self, code: int) -> None:
        self.closing = True
        if self.relay is not None:
            self.relay.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.relay

    def start_relay(self, call: Any) -> None:
        self.relay = asyncio.create_task(self._relay(call), name=f"process-relay-{self.sandbox_id}")

    async def _relay(self, call: Any) -> None:
        frames = OutputFrames()
        try:
            async for event in call:
                kind = event.WhichOneof("event")
                if kind == "started":
                    self.tag = event.started.tag
                    await self.send_json(
                        {"type": "start", "pid": event.started.pid, "tag": event.started.tag}
                    )
                elif kind == "output":
                    frame = frames.frame(event.output)
                    if frame is not None:
                        await self.send_json(frame)
                elif kind == "missed":
                    lost = event.missed.bytes
                    await self.send_json(
                        {
                            "type": "error",
                            "data": f"{lost} bytes of output were lost: the host no longer holds them",
                            "fatal": False,
                        }
                    )
                elif kind == "exited":
                    for frame in frames.flush():
                        await self.send_json(frame)
                    exit_frame = {"type": "exit", "exit_code": event.exited.exit_code}
                    if event.exited.timed_out:
                        exit_frame["timed_out"] = True
                    await self.send_json(exit_frame)
                    self.closing = True
                    await self.close(1000)
                    return
            await self.fail("the host agent ended the stream before the process exited")
        except grpc.RpcError as exc:
            await self.fail(agent_refusal(exc, self.verb).message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        if text_data is None:
            await self.send_json({"type": "error", "data": "binary frames are not part of this protocol"})
            return
        if len(text_data) > MAX_FRAME:
            await self.fail(f"message too large: at most {MAX_FRAME} characters")
            return
        try:
            message = json.loads(text_data)
        except ValueError as exc:
            await self.send_json({"type": "error", "data": f"invalid JSON: {exc}"})
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.send_json({"type": "error", "data": 'a message must be a JSON object with a "type"'})
            return
        await self.handle(message)

    async def handle(self, message: dict[str, Any]) -> None:
        if message["type"] == "stop":
            await self.stop()
        else:
            await self.send_json({"type": "error", "data": f"unknown message type {message['type'][:40]!r}"})

    async def stop(self) -> None:
        tag = getattr(self, "tag", "")
        if not tag:
            await self.send_json({"type": "error", "data": "no process to stop yet"})
            return
        stub = agents.aio_stub_for(self.address)
        request = pb.SignalProcessRequest(sandbox_id=self.sandbox_id, tag=tag)
        try:
            await stub.SignalProcess(request, timeout=agents.rpc_timeout(), metadata=agents.call_metadata())
        except grpc.RpcError as exc:
            code, _ = agents.status_of(exc)
            if code != grpc.StatusCode.NOT_FOUND:  # it exited meanwhile: its exit frame follows
                await self.send_json(
                    {"type": "error", "data": agent_refusal(exc, "stop the process").message}
                )


def parse_start(message: dict[str, Any]) -> Command:
    """A `start` frame as a Command, or Refused naming what is wrong with it."""
    cmd = message.get("cmd")
    if not isinstance(cmd, str) or not cmd:
        raise Refused("start: cmd must be a non-empty string")
    args = message.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise Refused("start: args must be a list of strings")
    envs = message.get("envs") or {}
    if not isinstance(envs, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in envs.items()
    ):
        raise Refused("start: envs must be an object of strings")
    fields = {}
    for name in ("cwd", "user", "tag"):
        value = message.get(name)
        if value is not None and not isinstance(value, str):
            raise Refused(f"start: {name} must be a string")
        fields[name] = value or ""
    if fields["tag"] and not rules.is_tag(fields["tag"]):
        raise Refused(f"start: {rules.bad_tag(fields['tag'])}")
    timeout = message.get("timeout_sec", 0)
    most = int(settings.WRENN_EXEC_MAX_TIMEOUT_SECONDS)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 <= timeout <= most:
        raise Refused(f"start: timeout_sec must be an integer from 0 (none) to {most}")
    return Command(cmd=cmd, args=args, envs=envs, timeout_sec=timeout, **fields)


class ExecStreamConsumer(ProcessSocket):
    """`/v1/capsules/{id}/exec/stream`: waits for `start`, runs the command, streams it."""

    async def ready(self) -> None:
        self.started = False
        self.first_frame = asyncio.create_task(self._first_frame_deadline())

    async def _first_frame_deadline(self) -> None:
        seconds = float(settings.PTY_FIRST_FRAME_TIMEOUT_SECONDS)
        await asyncio.sleep(seconds)
        if not self.started:
            await self.fail(f"no start message within {seconds:g} seconds")

    async def disconnect(self, code: int) -> None:
        first = getattr(self, "first_frame", None)
        if first is not None:
            first.cancel()
        await super().disconnect(code)

    async def handle(self, message: dict[str, Any]) -> None:
        if message["type"] != "start":
            if not self.started:
                await self.send_json({"type": "error", "data": 'send {"type": "start", "cmd": ...} first'})
                return
            await super().handle(message)
            return
        if self.started:
            await self.send_json({"type": "error", "data": "this socket already runs a command"})
            return
        try:
            command = parse_start(message)
        except Refused as exc:
            await self.fail(str(exc))
            return
        self.started = True
        self.first_frame.cancel()
        request = command.request(self.sandbox_id, self.caller.label, background=False)
        self.tag = request.tag
        call = agents.aio_stub_for(self.address).ProcessStart(request, metadata=agents.call_metadata())
        self.start_relay(call)


class ProcessStreamConsumer(ProcessSocket):
    """`/v1/capsules/{id}/processes/{selector}/stream`: a running process's output, from now or
    from `?offset=`; closing the socket leaves the process running."""

    verb = "reach its processes"

    async def ready(self) -> None:
        try:
            selector: Selector = parse_selector(self.scope["url_route"]["kwargs"]["selector"])
        except ActionError as exc:
            raise Refused(exc.message) from None
        offset = self._offset()
        request = pb.ProcessAttachRequest(
            sandbox_id=self.sandbox_id,
            tag=selector.tag,
            pid=selector.pid,
            resume=offset is not None,
            from_offset=offset or 0,
        )
        call = agents.aio_stub_for(self.address).ProcessAttach(request, metadata=agents.call_metadata())
        self.start_relay(call)

    def _offset(self) -> int | None:
        values = parse_qs(self.scope.get("query_string", b"").decode("latin1")).get("offset")
        if not values:
            return None
        value = values[-1]
        if not (value.isascii() and value.isdigit()) or int(value) >= 1 << 64:
            raise Refused(f"invalid offset {value[:30]!r}: a byte offset from 0")
        return int(value)
