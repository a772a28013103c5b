"""Pushing recordings to the control plane: one task per recorded session, owned here.

Each task takes its recorder's chunks in order and POSTs them to
`<control plane>/v1/hosts/recordings/<sandbox>/<tag>/<seq>` with the host's register token (the
heartbeat's URL and token). A chunk that fails is sent again, the same bytes under the same
seq (the control plane keeps a seq once), with a delay doubling up to RETRY_MAX, for as long as
it takes: meanwhile the recorder holds new lines up to its backlog and counts what it drops.
A refusal (the control plane no longer wants the recording: cap reached, recording turned
off, capsule gone) abandons it. The terminal never waits for any of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Protocol

from hostagent import __version__
from hostagent.heartbeat import HTTP_TIMEOUT, HeartbeatConfig, NoRedirects
from hostagent.recorder import BACKLOG_LIMIT, CHUNK_INTERVAL, Chunk, Recorder, RecordingOptions

log = logging.getLogger(__name__)

RECORDINGS_PATH = "/v1/hosts/recordings"
RETRY_FIRST = 0.25
RETRY_MAX = 5.0
# On shutdown, how long the last chunks of the sessions just killed may take to go out.
FLUSH_GRACE = 3.0
# Answers that mean "never send this recording again"; any other failure is retried.
REFUSALS = (403, 404, 409, 410, 413)

_OPENER = urllib.request.build_opener(NoRedirects())


class ChunkFailed(Exception):
    """Try again later."""


class ChunkRefused(Exception):
    """The control plane will not take this recording."""


class Sink(Protocol):
    async def send(self, sandbox_id: str, tag: str, chunk: Chunk) -> None: ...


class HttpSink:
    """The control plane's recordings endpoint, as the heartbeat reaches it."""

    def __init__(self, config: HeartbeatConfig) -> None:
        self.base = config.control_plane.rstrip("/") + RECORDINGS_PATH
        self.token = config.register_token

    def url(self, sandbox_id: str, tag: str, chunk: Chunk) -> str:
        query = {"offset": str(chunk.offset), "time": repr(chunk.time)}
        if chunk.final:
            query["final"] = "1"
            query["exit_code"] = str(chunk.exit_code if chunk.exit_code is not None else 0)
        path = "/".join(urllib.parse.quote(part, safe="") for part in (sandbox_id, tag, str(chunk.seq)))
        return f"{self.base}/{path}?{urllib.parse.urlencode(query)}"

    async def send(self, sandbox_id: str, tag: str, chunk: Chunk) -> None:
        await asyncio.to_thread(self._post, self.url(sandbox_id, tag, chunk), chunk.data)

    def _post(self, url: str, body: bytes) -> None:
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked when parsing options
            url,
            data=body,
            method="POST",
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/x-asciicast",
                "User-Agent": f"wrenn-hostagent/{__version__}",
            },
        )
        try:
            with _OPENER.open(request, timeout=HTTP_TIMEOUT) as response:
                response.read(4096)
        except urllib.error.HTTPError as exc:
            try:
                detail = exc.read(300).decode(errors="replace").strip()
            except Exception:  # the error's body is only a hint
                detail = ""
            message = f"HTTP {exc.code} {exc.reason}: {detail}"
            if exc.code in REFUSALS:
                raise ChunkRefused(message) from exc
            raise ChunkFailed(message) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise ChunkFailed(f"cannot reach the control plane: {reason}") from exc


class Recordings:
    """The agent's recorded sessions: makes their recorders and owns the tasks that push them."""

    def __init__(
        self,
        sink: Sink | None,
        *,
        interval: float = CHUNK_INTERVAL,
        backlog: int = BACKLOG_LIMIT,
        retry_max: float = RETRY_MAX,
    ) -> None:
        self.sink = sink
        self.interval = interval
        self.backlog = backlog
        self.retry_max = retry_max
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned = False

    def recorder(
        self, enabled: bool, options: RecordingOptions, width: int, height: int, command: str
    ) -> Recorder | None:
        """A recorder for a session about to start, or None when it is not to be recorded."""
        if not enabled:
            return None
        if self.sink is None:
            if not self._warned:
                log.warning(
                    "a terminal session asked to be recorded, but this agent has no --control-plane "
                    "to send recordings to: sessions are not recorded"
                )
                self._warned = True
            return None
        return Recorder(options, width, height, command, backlog=self.backlog)

    def push(self, sandbox_id: str, tag: str, recorder: Recorder) -> None:
        task = asyncio.create_task(self._push(sandbox_id, tag, recorder), name=f"recording-{tag}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push(self, sandbox_id: str, tag: str, recorder: Recorder) -> None:
        try:
            await self._send_all(sandbox_id, tag, recorder)
        except Exception:
            # A bug here must not surface only at shutdown; the session itself goes on.
            log.exception("recording of %s/%s failed", sandbox_id, tag)
            recorder.abandon()

    async def _send_all(self, sandbox_id: str, tag: str, recorder: Recorder) -> None:
        assert self.sink is not None  # noqa: S101 - recorder() makes none without a sink
        failing = False
        while (chunk := await recorder.next_chunk(self.interval)) is not None:
            delay = RETRY_FIRST
            while True:
                try:
                    await self.sink.send(sandbox_id, tag, chunk)
                    break
                except ChunkRefused as exc:
                    log.warning("recording of %s/%s refused by the control plane: %s", sandbox_id, tag, exc)
                    recorder.abandon()
                    return
                except ChunkFailed as exc:
                    if not failing:
                        log.warning(
                            "recording of %s/%s: chunk %d not sent (%s); retrying, holding up to %d bytes",
                            sandbox_id,
                            tag,
                            chunk.seq,
                            exc,
                            self.backlog,
                        )
                        failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
            if failing:
                log.info("recording of %s/%s: the control plane takes chunks again", sandbox_id, tag)
                failing = False
            recorder.sent(chunk)

    async def close(self, grace: float = FLUSH_GRACE) -> None:
        """Lets the pushes end (their sessions are over) for up to `grace`, then cancels them."""
        tasks = list(self._tasks)
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if pending:
            log.warning("%d recording(s) had chunks left unsent at shutdown", len(pending))
