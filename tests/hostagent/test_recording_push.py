"""A real agent records its terminals and pushes the chunks to a local HTTP server standing for the
control plane: complete casts from the PTY's own bytes, markers, retries, and the control plane
being down (the terminal never waits; the backlog is bounded and the loss is marked)."""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.hostagent.conftest import new_sandbox_id
from tests.support.hostagent import HostAgentProcess, start_hostagent, start_terminal
from tests.support.polling import wait_until

pytestmark = pytest.mark.timeout(120)

HOST_TOKEN = "wrh_recording-test-token"
BACKLOG = 64 * 1024


@dataclass
class ControlPlane:
    """What the agent pushed: chunks by (sandbox, tag), seq → (body, query)."""

    chunks: dict[tuple[str, str], dict[int, tuple[bytes, dict[str, str]]]] = field(default_factory=dict)
    down: bool = False
    refused_posts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def cast(self, sandbox_id: str, tag: str) -> bytes:
        with self.lock:
            parts = self.chunks.get((sandbox_id, tag), {})
            return b"".join(parts[seq][0] for seq in sorted(parts))

    def final(self, sandbox_id: str, tag: str) -> dict[str, str] | None:
        with self.lock:
            for _body, query in self.chunks.get((sandbox_id, tag), {}).values():
                if query.get("final") == "1":
                    return query
        return None


def serve(plane: ControlPlane) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            return

        def do_POST(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Authorization") != f"Bearer {HOST_TOKEN}":
                self._answer(401, {})
                return
            if url.path == "/v1/hosts/heartbeat":
                self._answer(200, {"host_id": "h", "interval": 30})
                return
            parts = url.path.removeprefix("/v1/hosts/recordings/").split("/")
            if plane.down:
                plane.refused_posts += 1
                self._answer(503, {"error": "down"})
                return
            query = dict(urllib.parse.parse_qsl(url.query))
            with plane.lock:
                seqs = plane.chunks.setdefault((parts[0], parts[1]), {})
                seqs.setdefault(int(parts[2]), (body, query))
            self._answer(200, {})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def plane() -> Iterator[tuple[ControlPlane, str]]:
    state = ControlPlane()
    server = serve(state)
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def recording_agent(
    plane: tuple[ControlPlane, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostAgentProcess]:
    agent = start_hostagent(
        Path(tmp_path_factory.mktemp("recording-agent")),
        runtime="process",
        env={"HOSTAGENT_REGISTER_TOKEN": HOST_TOKEN},
        args=["--control-plane", plane[1], "--recording-backlog", str(BACKLOG)],
    )
    yield agent
    agent.stop()


@pytest.fixture
async def stub(recording_agent: HostAgentProcess) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(recording_agent.address) as channel:
        yield pb_grpc.HostAgentStub(channel)


@pytest.fixture
async def capsule(stub: Any) -> AsyncIterator[str]:
    sandbox_id = new_sandbox_id()
    await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id=sandbox_id), timeout=30)
    yield sandbox_id
    with contextlib.suppress(grpc.aio.AioRpcError):  # the last test stops the agent
        await stub.DestroySandbox(pb.DestroySandboxRequest(sandbox_id=sandbox_id), timeout=30)


def parse(cast: bytes) -> tuple[dict[str, Any], list[list[Any]]]:
    lines = cast.split(b"\n")
    assert lines[-1] == b""
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:-1]]


def recorded(**options: Any) -> pb.PtyRecording:
    return pb.PtyRecording(enabled=True, **options)


HOSTILE = (
    r"printf '\"]\n[0.0, \"o\", \"fake\"]\n{\"version\": 2}\n\033]0;title\007\033[31mred\033[0m"
    r"\342\234\223 \377\376 \\\\ end\n'"
)


async def test_a_session_is_recorded_from_the_pty_byte_for_byte(
    stub: Any, capsule: str, plane: tuple[ControlPlane, str]
) -> None:
    state, _ = plane
    terminal, _ = await start_terminal(
        stub, capsule, "/bin/sh", "-c", HOSTILE, cols=100, rows=30, recording=recorded(title="hostile")
    )
    assert await terminal.wait_exit() == 0
    await wait_until(lambda: state.final(capsule, terminal.tag) is not None)
    header, events = parse(state.cast(capsule, terminal.tag))
    assert (header["version"], header["width"], header["height"]) == (2, 100, 30)
    assert header["title"] == "hostile"
    assert header["command"].startswith("/bin/sh -c printf")
    output = "".join(e[2] for e in events if e[1] == "o")
    assert output == bytes(terminal.output).decode("utf-8", errors="replace")
    assert "\ufffd" in output  # the two bytes that are not UTF-8
    assert state.final(capsule, terminal.tag) == {
        **state.final(capsule, terminal.tag),  # type: ignore[dict-item]
        "final": "1",
        "exit_code": "0",
    }


async def test_resizes_input_markers_and_a_kill_are_recorded(
    stub: Any, capsule: str, plane: tuple[ControlPlane, str]
) -> None:
    state, _ = plane
    terminal, _ = await start_terminal(stub, capsule, "/bin/cat", recording=recorded(input=True))
    await terminal.send(b"one\n")
    await terminal.expect(b"one\r\none\r\n")
    await terminal.resize(120, 40)
    mark = await stub.PtyMark(pb.PtyMarkRequest(sandbox_id=capsule, tag=terminal.tag, label="join user:bob"))
    assert mark.recorded
    await terminal.send(b"two\n")
    await terminal.expect(b"two\r\ntwo\r\n")
    await terminal.kill()
    assert await terminal.wait_exit() == 137
    await wait_until(lambda: state.final(capsule, terminal.tag) is not None)
    _, events = parse(state.cast(capsule, terminal.tag))
    kinds = [(e[1], e[2]) for e in events if e[1] != "o"]
    assert kinds == [("i", "one\n"), ("r", "120x40"), ("m", "join user:bob"), ("i", "two\n"), ("m", "kill")]
    assert state.final(capsule, terminal.tag)["exit_code"] == "137"  # type: ignore[index]


async def test_a_session_not_recorded_sends_nothing_and_takes_no_marker(
    stub: Any, capsule: str, plane: tuple[ControlPlane, str]
) -> None:
    state, _ = plane
    terminal, _ = await start_terminal(stub, capsule, "/bin/cat")
    mark = await stub.PtyMark(pb.PtyMarkRequest(sandbox_id=capsule, tag=terminal.tag, label="join x"))
    assert not mark.recorded
    await terminal.kill()
    await terminal.wait_exit()
    # Another, recorded, session of the same capsule ends after it: by then anything of the first
    # would have been pushed too.
    later, _ = await start_terminal(stub, capsule, "/bin/true", recording=recorded())
    await later.wait_exit()
    await wait_until(lambda: state.final(capsule, later.tag) is not None)
    assert state.cast(capsule, terminal.tag) == b""


async def test_bad_marks_and_recording_options_are_refused(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/cat", recording=recorded())
    for label, message in (("", "label must be 1 to 256 characters"), ("x" * 257, "label must be")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.PtyMark(pb.PtyMarkRequest(sandbox_id=capsule, tag=terminal.tag, label=label))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (refused.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.PtyMark(pb.PtyMarkRequest(sandbox_id=capsule, tag="pty-00000000", label="x"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as negative:
        await start_terminal(stub, capsule, "/bin/true", recording=recorded(max_bytes=-1))
    assert "recording.max_bytes must be 0 (no cap) or more" in (negative.value.details() or "")
    await terminal.kill()


async def test_with_the_control_plane_down_the_terminal_runs_on_and_the_loss_is_marked(
    stub: Any, capsule: str, plane: tuple[ControlPlane, str]
) -> None:
    state, _ = plane
    state.down = True
    try:
        # 2 MB of output, far over the backlog: the process must still run to its end at once.
        terminal, _ = await start_terminal(
            stub,
            capsule,
            "/bin/sh",
            "-c",
            "head -c 2000000 /dev/zero | tr '\\0' x; echo; echo done",
            recording=recorded(),
        )
        assert await terminal.wait_exit(timeout=60) == 0
        assert len(terminal.output) > 2_000_000
        await wait_until(lambda: state.refused_posts > 0)
    finally:
        state.down = False
    await wait_until(lambda: state.final(capsule, terminal.tag) is not None, within=60)
    cast = state.cast(capsule, terminal.tag)
    _, events = parse(cast)
    # What was held while the control plane was away stayed within the backlog (plus the header
    # and the marker), and the marker says what was lost.
    assert len(cast) <= BACKLOG + 1024
    markers = [e[2] for e in events if e[1] == "m"]
    # One marker per run of losses (a short line may fit between two runs).
    assert markers, events[-3:]
    for marker in markers:
        assert marker.startswith("recording lost "), markers
    output = "".join(e[2] for e in events if e[1] == "o")
    assert output.startswith("xxxx")
    # Most of the 2 MB was lost, and the markers count it.
    lost = sum(int(m.split("(")[1].split(" bytes")[0]) for m in markers)
    assert len(output) + lost > 2_000_000 > len(output)


async def test_an_agent_stopping_sends_its_sessions_last_chunks(
    stub: Any, capsule: str, plane: tuple[ControlPlane, str], recording_agent: HostAgentProcess
) -> None:
    """Last in the module: the agent stops (SIGTERM) with a recorded session running."""
    state, _ = plane
    terminal, _ = await start_terminal(stub, capsule, "/bin/cat", recording=recorded())
    await terminal.send(b"still here\n")
    await terminal.expect(b"still here\r\nstill here\r\n")
    recording_agent.stop()
    final = state.final(capsule, terminal.tag)
    assert final is not None
    assert final["exit_code"] == "137"
    _, events = parse(state.cast(capsule, terminal.tag))
    assert events[-1][1:] == ["m", "kill: the capsule or the agent is stopping"]
    assert "still here" in "".join(e[2] for e in events if e[1] == "o")
