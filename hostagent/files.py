"""File calls of the agent: paths checked, then one helper process inside the capsule per call.

`Files.helper()` starts hostagent/filehelper.py with the capsule's `/usr/bin/python3` through
the runtime's piped spawn (so in the capsule's namespaces, mounts, cgroup and user) and speaks
its framed protocol over the pipes. Why a process inside rather than the agent's own `open()`:
only the capsule's kernel view resolves `..`, symlinks and absolute paths the way the capsule
sees them, so nothing a capsule names can reach the host or another capsule. Why `-c <source>`
rather than a helper file shipped into the capsule: nothing to copy or keep read-only in every
capsule, and nothing the capsule's code could replace between calls (/usr is the host's, read-only).

The helper runs with the capsule's user and can be traced by the capsule's own code, so its
answers are hostile input: frames are bounded, JSON is checked field by field, and whatever does
not fit is an error, never an exception of the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import posixpath
import signal
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from hostagent import filehelper
from hostagent.blocking import run_blocking
from hostagent.bwrap import HOMES, ROOT_HOME
from hostagent.errors import (
    AgentError,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from hostagent.lifecycle import Lifecycle
from hostagent.runtime import EnvironmentStopped, LaunchRequest, Runtime
from hostagent.sandboxes import SandboxStore
from hostagent.spawn import Piped, close_quietly
from protos import hostagent_pb2 as pb

log = logging.getLogger(__name__)

PYTHON = "/usr/bin/python3"
# -I: no PYTHON* variables, user site or script directory on the path; -S: no site module (so
# no .pth file of the image runs), and a faster start.
PYTHON_FLAGS = ["-I", "-S", "-c"]
SOURCE = Path(filehelper.__file__).read_text()
CHUNK = filehelper.CHUNK
MAX_PATH = 4096
MAX_NAME = 255
# The largest answer taken from a helper: a listing of MAX_ENTRIES entries fits well.
MAX_ANSWER = 16 << 20
# Read buffer of the helper's stdout: the transport stops reading (and the helper blocks) past
# twice this, so a read never holds more than a few chunks.
READ_LIMIT = 2 * (CHUNK + filehelper.HEADER.size)
STDERR_KEPT = 2048
# How long a helper whose call ended may take to exit by itself (see Helper.close).
EXIT_GRACE = 2.0
HEADER = filehelper.HEADER


ERRORS: dict[str, type[AgentError]] = {
    "NOT_FOUND": NotFound,
    "ALREADY_EXISTS": AlreadyExists,
    "FAILED_PRECONDITION": FailedPrecondition,
    "PERMISSION_DENIED": PermissionDenied,
    "RESOURCE_EXHAUSTED": ResourceExhausted,
    "INVALID_ARGUMENT": InvalidArgument,
}


class HelperBroken(AgentError):
    """The helper answered something outside the protocol (or died): its message says what."""


def resolve_path(path: str, user: str) -> str:
    """The capsule path a request names: checked, relative to the user's home, `..` folded."""
    if not path:
        raise InvalidArgument("path is required")
    if "\x00" in path:
        raise InvalidArgument("path must not contain NUL bytes")
    size = len(path.encode("utf-8", "surrogatepass"))
    if size > MAX_PATH:
        raise InvalidArgument(f"path is {size} bytes long; at most {MAX_PATH} are allowed")
    for part in path.split("/"):
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME:
            raise InvalidArgument(f"a path component is longer than {MAX_NAME} bytes: {part[:40]}…")
    if not path.startswith("/"):
        path = posixpath.join(HOMES.get(user, ROOT_HOME), path)
    # `..` at the top stays at the top, as the kernel does; the helper resolves the rest inside.
    clean = posixpath.normpath(path)
    return "/" + clean.lstrip("/")


def _text(value: Any) -> str:
    """A string from the helper, made valid UTF-8 (a file name may be any bytes)."""
    if not isinstance(value, str):
        return ""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _number(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return min(max(value, low), high)


def entry_message(value: Any) -> pb.FileEntry:
    if not isinstance(value, dict):
        raise HelperBroken("the capsule's file helper answered a malformed entry")
    kind = value.get("type")
    return pb.FileEntry(
        name=_text(value.get("name")),
        path=_text(value.get("path")),
        type=kind if kind in ("file", "directory", "symlink") else "file",
        size=_number(value.get("size"), 0, (1 << 64) - 1),
        mode=_number(value.get("mode"), 0, 0o7777),
        permissions=_text(value.get("permissions"))[:10],
        owner=_text(value.get("owner"))[:256],
        group=_text(value.get("group"))[:256],
        modified_at=_number(value.get("modified_at"), -(1 << 63), (1 << 63) - 1),
        symlink_target=_text(value.get("symlink_target"))[:MAX_PATH],
    )


class _StderrTail(asyncio.Protocol):
    """Keeps the end of what the helper wrote on stderr (a traceback), for error messages."""

    def __init__(self) -> None:
        self.tail = b""

    def data_received(self, data: bytes) -> None:
        self.tail = (self.tail + data)[-STDERR_KEPT:]


class Helper:
    """One helper process and its pipes: frames out, frames in."""

    def __init__(self, piped: Piped) -> None:
        self.piped = piped
        self.reader = asyncio.StreamReader(limit=READ_LIMIT)
        self.stderr = _StderrTail()
        self._transports: list[asyncio.BaseTransport] = []
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        if self.piped.stdin_fd is None:
            raise AgentError("the file helper was started without a stdin pipe")
        # The pipe transports own the descriptors from here on (closing them closes the fds).
        out = os.fdopen(self.piped.stdout_fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self.reader), out)
        self._transports.append(transport)
        err = os.fdopen(self.piped.stderr_fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(lambda: self.stderr, err)
        self._transports.append(transport)
        inp = os.fdopen(self.piped.stdin_fd, "wb", buffering=0)
        write_transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), inp
        )
        self._transports.append(write_transport)
        self._writer = asyncio.StreamWriter(write_transport, protocol, None, loop)

    async def send(self, kind: bytes, payload: bytes) -> None:
        """One frame to the helper, waiting while the pipe is full (backpressure)."""
        if self._writer is None:
            raise AgentError("the file helper is not connected")
        self._writer.write(HEADER.pack(kind, len(payload)))
        if payload:
            self._writer.write(payload)
        await self._writer.drain()

    async def send_json(self, value: dict[str, Any]) -> None:
        await self.send(b"J", json.dumps(value).encode())

    async def receive(self) -> tuple[bytes, bytes]:
        try:
            kind, size = HEADER.unpack(await self.reader.readexactly(HEADER.size))
            if kind not in (b"J", b"D", b"E") or size > (MAX_ANSWER if kind == b"J" else CHUNK):
                raise HelperBroken(
                    f"the capsule's file helper broke its protocol (a {kind!r} frame of {size} bytes)"
                )
            return kind, await self.reader.readexactly(size)
        except asyncio.IncompleteReadError:
            raise self.died() from None

    def died(self) -> HelperBroken:
        detail = self.stderr.tail.decode(errors="replace").strip().splitlines()
        reason = f": {detail[-1]}" if detail else " (killed, or the capsule stopped)"
        return HelperBroken(f"the capsule's file helper ended without answering{reason}")

    async def answer(self) -> dict[str, Any]:
        """The next JSON answer; an error answer raises the AgentError it names."""
        kind, payload = await self.receive()
        if kind != b"J":
            raise HelperBroken("the capsule's file helper sent data where an answer was due")
        try:
            value = json.loads(payload)
        except ValueError:
            raise HelperBroken("the capsule's file helper sent a malformed answer") from None
        if not isinstance(value, dict):
            raise HelperBroken("the capsule's file helper sent a malformed answer")
        error = value.get("error")
        if error is not None:
            if not isinstance(error, dict):
                raise HelperBroken("the capsule's file helper sent a malformed error")
            cls = ERRORS.get(str(error.get("kind")), AgentError)
            raise cls(_text(error.get("message"))[:1024] or "file operation failed")
        return value

    async def close(self) -> None:
        for transport in self._transports:
            transport.close()
        if not self._transports:
            close_quietly(
                self.piped.stdout_fd,
                self.piped.stderr_fd,
                *([self.piped.stdin_fd] if self.piped.stdin_fd is not None else []),
            )
        # Its stdin closed, an abandoned helper removes its temporary file and exits: it is given
        # a moment for that, then killed (with anything it left: it leads its own process group).
        if not await _exited(self.piped.pid, EXIT_GRACE):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.piped.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            await run_blocking(os.waitpid, self.piped.pid, 0)


async def _exited(pid: int, grace: float) -> bool:
    """Whether our child `pid` exits within `grace` seconds (its pidfd turns readable then)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return True  # already reaped
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(pidfd, on_exit)
    try:
        await asyncio.wait_for(gone, grace)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


class Files:
    """File operations on capsules, for the servicer (hostagent/file_service.py)."""

    def __init__(self, store: SandboxStore, lifecycle: Lifecycle, runtime: Runtime) -> None:
        self.store = store
        self.lifecycle = lifecycle
        self.runtime = runtime

    def user(self, user: str) -> str:
        return user or self.runtime.exec_user

    @contextlib.asynccontextmanager
    async def helper(self, sandbox_id: str, user: str, request: dict[str, Any]) -> AsyncIterator[Helper]:
        """A helper started in the capsule and sent `request` (its path already resolved)."""
        root = self.store.path(sandbox_id)
        self.lifecycle.check_startable(sandbox_id)
        launch = LaunchRequest(
            cmd=PYTHON,
            args=[*PYTHON_FLAGS, SOURCE],
            envs={},
            cwd="/",
            user=user,
            terminal=False,
        )
        try:
            piped = await self._spawn(sandbox_id, root, launch)
        except EnvironmentStopped:
            piped = await self._spawn(sandbox_id, root, launch)
        helper = Helper(piped)
        try:
            await helper.connect()
            mounts = self.runtime.file_mounts(root)
            await helper.send_json({**request, "mounts": mounts})
            yield helper
        except (BrokenPipeError, ConnectionResetError):
            # It stopped reading: it answered (an error) and exited, or it died.
            raise await _last_word(helper) from None
        finally:
            await helper.close()

    async def _spawn(self, sandbox_id: str, root: Path, launch: LaunchRequest) -> Piped:
        async with self.lifecycle.starting(sandbox_id) as cgroup_procs:
            try:
                return await self.runtime.spawn_piped(sandbox_id, root, launch, cgroup_procs, stdin=True)
            except EnvironmentStopped:
                raise
            except FailedPrecondition as exc:
                if "No such file" in exc.message:
                    raise FailedPrecondition(
                        f"file calls need {PYTHON} inside the capsule (the host's /usr): "
                        "install python3-minimal on this host"
                    ) from exc
                raise
            except OSError as exc:
                raise ResourceExhausted(f"cannot start the file helper: {exc.strerror or exc}") from exc

    # One call each.

    async def stat(self, sandbox_id: str, path: str, user: str) -> pb.FileEntry:
        user = self.user(user)
        request = {"op": "stat", "path": resolve_path(path, user)}
        async with self.helper(sandbox_id, user, request) as helper:
            return entry_message((await helper.answer()).get("entry"))

    async def list(self, sandbox_id: str, path: str, depth: int, user: str) -> list[pb.FileEntry]:
        user = self.user(user)
        if depth > filehelper.MAX_DEPTH:
            raise InvalidArgument(f"depth must be at most {filehelper.MAX_DEPTH}, got {depth}")
        request = {"op": "list", "path": resolve_path(path, user), "depth": depth}
        async with self.helper(sandbox_id, user, request) as helper:
            entries = (await helper.answer()).get("entries")
        if not isinstance(entries, list) or len(entries) > filehelper.MAX_ENTRIES:
            raise HelperBroken("the capsule's file helper answered a malformed listing")
        return [entry_message(e) for e in entries]

    async def make_dir(self, sandbox_id: str, path: str, user: str) -> pb.FileEntry:
        user = self.user(user)
        request = {"op": "mkdir", "path": resolve_path(path, user)}
        async with self.helper(sandbox_id, user, request) as helper:
            return entry_message((await helper.answer()).get("entry"))

    async def remove(self, sandbox_id: str, path: str, user: str) -> None:
        user = self.user(user)
        request = {"op": "remove", "path": resolve_path(path, user)}
        if request["path"] == "/":
            # Allowed to the capsule's root, and never what an API call means: refused outright.
            raise InvalidArgument("refusing to remove / (name what to remove below it)")
        async with self.helper(sandbox_id, user, request) as helper:
            await helper.answer()

    async def read(self, sandbox_id: str, path: str, user: str) -> AsyncGenerator[pb.FileChunk, None]:
        """The file's entry, then its bytes; the helper is read only as fast as this is."""
        user = self.user(user)
        request = {"op": "read", "path": resolve_path(path, user)}
        async with self.helper(sandbox_id, user, request) as helper:
            yield pb.FileChunk(entry=entry_message((await helper.answer()).get("entry")))
            while True:
                kind, payload = await helper.receive()
                if kind == b"E":
                    return
                if kind == b"J":
                    await _raise_answer(payload)
                yield pb.FileChunk(data=payload)

    async def write(
        self,
        sandbox_id: str,
        start: pb.WriteFileStart,
        chunks: AsyncIterator[bytes],
        ready: Callable[[], Awaitable[None]],
    ) -> pb.FileEntry:
        """Bytes from `chunks` into the file, each one handed on before the next is taken;
        `ready()` once the file is open, before the first chunk is asked for."""
        user = self.user(start.user)
        request = {"op": "write", "path": resolve_path(start.path, user), "mode": start.mode or 0o644}
        async with self.helper(sandbox_id, user, request) as helper:
            await helper.answer()  # the file is open (or the error says why not)
            await ready()
            async for data in chunks:
                for offset in range(0, len(data), CHUNK):
                    await helper.send(b"D", data[offset : offset + CHUNK])
            await helper.send(b"E", b"")
            return entry_message((await helper.answer()).get("entry"))


async def _raise_answer(payload: bytes) -> None:
    helper_error = HelperBroken("the capsule's file helper sent a malformed answer")
    try:
        value = json.loads(payload)
    except ValueError:
        raise helper_error from None
    error = value.get("error") if isinstance(value, dict) else None
    if not isinstance(error, dict):
        raise helper_error
    raise ERRORS.get(str(error.get("kind")), AgentError)(_text(error.get("message"))[:1024] or "read failed")


async def _last_word(helper: Helper) -> AgentError:
    """Why a helper stopped reading: its error answer if it left one, else that it died."""
    try:
        while True:
            kind, payload = await asyncio.wait_for(helper.receive(), 5)
            if kind == b"J":
                await _raise_answer(payload)
    except AgentError as error:
        return error
    except TimeoutError:
        return helper.died()
