"""Files on the real stack: every `capsule.files` call of Wrenn's SDK 0.3.0, each error path of the
API, and 200 MB through upload and download without daphne or the agent growing by more than a
few MiB."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.hostagent import REPO_ROOT
from tests.support.sdk import sdk_python
from tests.support.stack import Stack, running_stack

pytestmark = [pytest.mark.timeout(300)]

FILES_DRIVER = REPO_ROOT / "tests" / "sdk" / "files_driver.py"
CHUNK = 256 * 1024
BIG = 200 * 1024 * 1024
RSS_BOUND_KIB = 32 * 1024
WRITE_LIMIT = 4 * 1024 * 1024


class Api:
    """HTTP calls as any client makes them (http.client: bodies streamed, responses read in chunks)."""

    def __init__(self, stack: Stack, key: str) -> None:
        self.port = stack.workers[0][0]
        self.key = key

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def call(
        self, path: str, body: Any = None, raw: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, bytes]:
        """(status, JSON or None, raw body) of a POST."""
        connection = self.connection()
        data = raw if raw is not None else json.dumps(body).encode()
        sent = {"X-API-Key": self.key, "Content-Type": "application/json", **(headers or {})}
        connection.request("POST", path, body=data, headers=sent)
        response = connection.getresponse()
        content = response.read()
        connection.close()
        parsed = None
        if response.getheader("Content-Type", "").startswith("application/json") and content:
            parsed = json.loads(content)
        return response.status, parsed, content

    def upload(self, path: str, target: str, chunks: Iterator[bytes], field: str = "file") -> tuple[int, Any]:
        """A streamed multipart upload (chunked), as SDK 0.3.0's upload_stream sends it."""
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\n{target}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="f"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()

        def body() -> Iterator[bytes]:
            yield head
            yield from chunks
            yield f"\r\n--{boundary}--\r\n".encode()

        connection = self.connection()
        connection.request(
            "POST",
            path,
            body=body(),
            headers={"X-API-Key": self.key, "Content-Type": f"multipart/form-data; boundary={boundary}"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        content = response.read()
        connection.close()
        return response.status, json.loads(content) if content else None


def pattern(size: int) -> Iterator[bytes]:
    block = hashlib.sha256(b"wrenn").digest() * (CHUNK // 32)
    sent = 0
    while sent < size:
        piece = block[: min(CHUNK, size - sent)]
        sent += len(piece)
        yield piece


def digest(chunks: Iterator[bytes]) -> str:
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.hexdigest()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


class PeakRss:
    """The highest RSS of some processes while the block runs, sampled every 20 ms."""

    def __init__(self, **pids: int) -> None:
        self.pids = pids
        self.before = {name: rss_kib(pid) for name, pid in pids.items()}
        self.peak = dict(self.before)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_kib(pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def growth(self) -> dict[str, int]:
        return {name: self.peak[name] - self.before[name] for name in self.pids}


@pytest.fixture(scope="module")
def files_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: a small upload limit (the 413 test), and hosts declared dead only after
    a minute. daphne receives an upload's whole body on its event loop before the application
    sees it, and the worker answers little else meanwhile (the host's heartbeats included): with
    the shared stack's 3 s, a 100 MB upload made the demo capsule `missing` (docs/api.md, Files)."""
    env = {"WRENN_FILES_WRITE_MAX_BYTES": str(WRITE_LIMIT), "WRENN_HOST_DEAD_AFTER_SEC": "60"}
    with running_stack(tmp_path_factory.mktemp("files-stack"), env=env) as running:
        yield running


@pytest.fixture(scope="module")
def files_demo(files_stack: Stack) -> dict[str, Any]:
    return files_stack.demo()


@pytest.fixture(scope="module")
def api(files_stack: Stack, files_demo: dict[str, Any]) -> Api:
    return Api(files_stack, files_demo["api_key"])


@pytest.fixture(scope="module")
def capsule(files_demo: dict[str, Any]) -> str:
    return str(files_demo["capsule_id"])


def files_path(capsule: str, call: str) -> str:
    return f"/v1/capsules/{capsule}/files/{call}"


def new_capsule(api: Api) -> str:
    status, body, _ = api.call("/v1/capsules", {"timeout_sec": 0})
    assert status == 201, body
    return str(body["id"])


# --- the SDK ---------------------------------------------------------------------------------


def test_every_files_call_of_sdk_0_3_0(files_stack: Stack, files_demo: dict[str, Any], tmp_path: Any) -> None:
    stack, demo = files_stack, files_demo
    plan = {"capsule_id": demo["capsule_id"], "dir": f"/root/sdk-{uuid.uuid4().hex[:8]}", "stream_mb": 8}
    result = subprocess.run(
        [str(sdk_python("0.3.0")), "-I", str(FILES_DRIVER)],
        cwd=tmp_path,
        env={
            "PATH": os.environ["PATH"],
            "WRENN_BASE_URL": f"{stack.base_url}/api",
            "WRENN_API_KEY": demo["api_key"],
        },
        input=json.dumps(plan).encode(),
        capture_output=True,
        timeout=240,
        check=False,
    )
    lines = [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]
    failed = [line for line in lines if line.get("ok") is False]
    assert failed == [], (failed, result.stderr.decode()[-2000:])
    checks = {line["check"] for line in lines if "check" in line}
    assert checks == {
        "write_and_read_text",
        "write_and_read_bytes",
        "list",
        "exists",
        "make_dir",
        "remove",
        "read_missing",
        "upload_and_download_stream",
        "async_basics",
        "async_streams",
    }, (lines, result.stderr.decode()[-2000:])
    assert lines[-1] == {"done": True}


# --- the API's answers -----------------------------------------------------------------------


def test_read_answers_the_bytes_as_octet_stream(api: Api, capsule: str) -> None:
    status, body = api.upload(files_path(capsule, "write"), "/root/api/bytes.bin", iter([bytes(range(256))]))
    assert status == 200, body
    assert body["entry"]["path"] == "/root/api/bytes.bin"
    assert body["entry"]["size"] == 256
    connection = api.connection()
    connection.request(
        "POST",
        files_path(capsule, "read"),
        body=json.dumps({"path": "/root/api/bytes.bin"}),
        headers={"X-API-Key": api.key, "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/octet-stream"
    assert response.read() == bytes(range(256))
    connection.close()


def test_relative_paths_are_in_roots_home(api: Api, capsule: str) -> None:
    status, body = api.upload(files_path(capsule, "write"), "relative-api.txt", iter([b"rel"]))
    assert status == 200, body
    assert body["entry"]["path"] == "/root/relative-api.txt"


def test_list_defaults_to_depth_one_and_mkdir_conflicts(api: Api, capsule: str) -> None:
    base = f"/root/api-{uuid.uuid4().hex[:6]}"
    status, made, _ = api.call(files_path(capsule, "mkdir"), {"path": f"{base}/x/y"})
    assert status == 201, made
    assert made["entry"]["type"] == "directory"
    status, again, _ = api.call(files_path(capsule, "mkdir"), {"path": f"{base}/x/y"})
    assert (status, again["error"]["code"]) == (409, "conflict")
    status, listed, _ = api.call(files_path(capsule, "list"), {"path": base})
    assert status == 200, listed
    assert [e["path"] for e in listed["entries"]] == [f"{base}/x"]
    entry = listed["entries"][0]
    assert set(entry) == {
        "name",
        "path",
        "type",
        "size",
        "mode",
        "permissions",
        "owner",
        "group",
        "modified_at",
        "symlink_target",
    }


@pytest.mark.parametrize(
    ("call", "body", "status", "code", "message"),
    [
        ("read", {"path": "/root/does/not/exist"}, 404, "not_found", "No such file"),
        ("remove", {"path": "/root/does/not/exist"}, 404, "not_found", "No such file"),
        ("list", {"path": "/root/does/not/exist"}, 404, "not_found", "No such file"),
        ("read", {"path": "/root"}, 400, "invalid_request", "directory"),
        ("read", {}, 400, "invalid_request", "path"),
        ("list", {"path": "/root", "depth": 99}, 400, "invalid_request", "depth"),
        ("list", {"path": "/root", "depth": "deep"}, 400, "invalid_request", "depth"),
        ("read", {"path": "/a\u0000b"}, 400, "invalid_request", "ull"),
        ("read", {"path": "/" + "a" * 5000}, 400, "invalid_request", "4096"),
        ("mkdir", {"path": "/usr/bin/planted"}, 403, "forbidden", "/usr/bin/planted"),
    ],
)
def test_each_error_has_its_status_code_and_message(
    api: Api, capsule: str, call: str, body: dict[str, Any], status: int, code: str, message: str
) -> None:
    got, answer, _ = api.call(files_path(capsule, call), body)
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert message in answer["error"]["message"]


def test_bad_json_is_a_400(api: Api, capsule: str) -> None:
    status, answer, _ = api.call(files_path(capsule, "list"), raw=b"{not json")
    assert (status, answer["error"]["code"]) == (400, "invalid_request")


def test_escaping_paths_name_capsule_files(api: Api, capsule: str, files_stack: Stack) -> None:
    stack = files_stack
    secret = stack.data_dir / "host-secret.txt"
    secret.write_text("host only")
    for path in (str(secret), f"../../../..{secret}", f"/proc/1/root{secret}"):
        status, answer, _ = api.call(files_path(capsule, "read"), {"path": path})
        assert status == 404, answer
    status, _answer = api.upload(files_path(capsule, "write"), str(stack.data_dir / "planted"), iter([b"x"]))
    assert status in (200, 403, 404)  # the capsule's own /tmp, a read-only place, or nowhere
    assert not (stack.data_dir / "planted").exists()


def test_uploads_need_multipart_with_path_first(api: Api, capsule: str) -> None:
    status, answer, _ = api.call(files_path(capsule, "write"), {"path": "/root/x"})
    assert (status, answer["error"]["code"]) == (400, "invalid_request")
    assert "multipart/form-data" in answer["error"]["message"]
    status, answer = api.upload(files_path(capsule, "write"), "/root/x", iter([b"x"]), field="other")
    assert status == 400
    assert "`file` part" in answer["error"]["message"]


def test_a_malformed_multipart_body_reaches_the_api_and_is_named(api: Api, capsule: str) -> None:
    """Not Twisted's bare 400 and a dropped connection (it parsed form bodies itself)."""
    status, answer, _ = api.call(
        files_path(capsule, "write"),
        raw=b'--xyz\r\nContent-Disposition: form-data; name="path"\r\n\r\n/root/x',
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert (status, answer["error"]["code"]) == (400, "invalid_request"), answer
    assert "multipart" in answer["error"]["message"]


def test_missing_and_other_teams_capsules_are_404(api: Api, files_stack: Stack, capsule: str) -> None:
    stack = files_stack
    other_key = stack.manage(
        "shell",
        "--verbosity=0",
        "-c",
        "from capsules.models import Team; from capsules.keys import create_api_key; "
        f"t = Team.objects.create(name='Files other', slug='files-{uuid.uuid4().hex[:6]}'); "
        "print(create_api_key(t, 'x')[1])",
    ).strip()
    other = Api(stack, other_key)
    for client, capsule_id in ((api, "cap-000000000000"), (other, capsule)):
        for call in ("read", "list", "mkdir", "remove", "stream/read"):
            status, answer, _ = client.call(files_path(capsule_id, call), {"path": "/root"})
            assert (status, answer["error"]["code"]) == (404, "not_found"), (call, answer)
        status, answer = client.upload(files_path(capsule_id, "stream/write"), "/root/x", iter([b"x"]))
        assert status == 404, answer


def test_a_paused_capsule_answers_409_naming_its_status(api: Api) -> None:
    capsule_id = new_capsule(api)
    try:
        status, answer, _ = api.call(f"/v1/capsules/{capsule_id}/pause", {})
        assert status == 200, answer
        status, answer, _ = api.call(files_path(capsule_id, "list"), {"path": "/root"})
        assert (status, answer["error"]["code"]) == (409, "invalid_state")
        assert "paused" in answer["error"]["message"]
        status, answer = api.upload(files_path(capsule_id, "write"), "/root/x", iter([b"x"]))
        assert (status, answer["error"]["code"]) == (409, "invalid_state")
    finally:
        connection = api.connection()
        connection.request("DELETE", f"/v1/capsules/{capsule_id}", headers={"X-API-Key": api.key})
        connection.getresponse().read()
        connection.close()
    status, answer, _ = api.call(files_path(capsule_id, "read"), {"path": "/root/x"})
    assert (status, answer["error"]["code"]) == (409, "invalid_state"), answer
    assert "stopped" in answer["error"]["message"]


def test_a_write_past_the_limit_is_413_with_the_limit(api: Api, capsule: str) -> None:
    limit = WRITE_LIMIT
    status, answer = api.upload(files_path(capsule, "write"), "/root/too-big.bin", pattern(limit + (1 << 20)))
    assert (status, answer["error"]["code"]) == (413, "too_large"), answer
    assert str(limit) in answer["error"]["message"]
    status, answer, _ = api.call(files_path(capsule, "read"), {"path": "/root/too-big.bin"})
    assert status == 404, answer  # nothing half-written stays behind


# --- 200 MB with bounded memory --------------------------------------------------------------


def test_200_mb_up_and_down_without_growing_daphne_or_the_agent(
    api: Api, capsule: str, files_stack: Stack
) -> None:
    stack = files_stack
    assert stack.agent is not None
    pids = {"daphne": stack.workers[0][1].pid, "agent": stack.agent.proc.pid}
    expected = digest(pattern(BIG))
    with PeakRss(**pids) as upload:
        started = time.monotonic()
        status, answer = api.upload(files_path(capsule, "stream/write"), "/root/big-200.bin", pattern(BIG))
        up_seconds = time.monotonic() - started
    assert status == 200, answer
    assert answer["entry"]["size"] == BIG
    with PeakRss(**pids) as download:
        started = time.monotonic()
        connection = api.connection()
        connection.request(
            "POST",
            files_path(capsule, "stream/read"),
            body=json.dumps({"path": "/root/big-200.bin"}),
            headers={"X-API-Key": api.key, "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert response.status == 200
        got = digest(iter(lambda: response.read(CHUNK), b""))
        connection.close()
        down_seconds = time.monotonic() - started
    assert got == expected
    api.call(files_path(capsule, "remove"), {"path": "/root/big-200.bin"})
    figures = {"upload": upload.growth(), "download": download.growth()}
    print(f"RSS growth (KiB) over 200 MB: {figures}; upload {up_seconds:.1f}s, download {down_seconds:.1f}s")
    for direction, growth in figures.items():
        for process, kib in growth.items():
            assert kib <= RSS_BOUND_KIB, f"{process} grew by {kib} KiB during the {direction}: {figures}"


# --- last: the host agent goes away ----------------------------------------------------------


def test_a_host_that_does_not_answer_is_503(api: Api, capsule: str, files_stack: Stack) -> None:
    assert files_stack.agent is not None
    files_stack.agent.stop()
    try:
        for call in ("list", "read"):
            status, answer, _ = api.call(files_path(capsule, call), {"path": "/root"})
            assert (status, answer["error"]["code"]) == (503, "host_unavailable"), answer
            assert answer["error"]["message"] == "sandbox host is not reachable"
        status, answer = api.upload(files_path(capsule, "stream/write"), "/root/x", iter([b"x"]))
        assert (status, answer["error"]["code"]) == (503, "host_unavailable"), answer
    finally:
        files_stack.start_agent()
