"""`make run` as a user runs it: scripts/run-local.sh on a data directory and ports of its own, and
its secrets: a key made once that the server signs with, and files no other user can read.

The script runs once for the module; the set-up steps it shares with `make cluster`
(scripts/lib.sh) are also run on their own, on directories of the tests' making.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from websockets.asyncio.client import connect

from tests.support.cluster import children_of
from tests.support.hostagent import REPO_ROOT, _let_sandbox_user_through, free_port
from tests.support.terminal import JSON_DIALECT, Terminal
from wrenn.secret_key import DEVELOPMENT_KEY

pytestmark = [pytest.mark.timeout(120)]

RUN_LOCAL = REPO_ROOT / "scripts" / "run-local.sh"
START_TIMEOUT = 90.0
# Variables of the caller that would change what the script does.
NOT_INHERITED = ("DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY", "DJANGO_SECRET_KEY_FILE", "HOST")


@dataclass
class Embedded:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    output: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def banner_field(self, label: str) -> str:
        for line in self.output.read_text(errors="replace").splitlines():
            if line.strip().startswith(f"{label}:"):
                return line.split(":", 1)[1].split()[0]
        raise AssertionError(f"no {label} in the banner:\n{self.output.read_text(errors='replace')}")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local test URL
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextlib.contextmanager
def running_embedded(
    workdir: Path, port: int | None = None, agent_port: int | None = None, **extra_env: str
) -> Iterator[Embedded]:
    """run-local.sh on `workdir/data` (kept from an earlier run there), until the banner."""
    data_dir = workdir / "data"
    data_dir.mkdir(exist_ok=True)
    _let_sandbox_user_through(data_dir)
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env |= {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PY": sys.executable,
        "WRENN_DATA_DIR": str(data_dir),
        "WRENN_HOSTAGENT_ADDR": f"127.0.0.1:{agent_port or free_port()}",
        "HOSTAGENT_CGROUP_ROOT": f"wrenn-run-local-{port}",
        "HOSTAGENT_NETWORK_POOL": f"10.{128 + port % 64}.0.0/16",
        "HOSTAGENT_NETWORK_TABLE": f"wrenn_run_local_{port}",
        "HOSTAGENT_NETWORK_PREFIX": f"wr{port}",
        "PYTHONUNBUFFERED": "1",
        **extra_env,
    }
    output = workdir / "run-local.out"
    with output.open("wb") as out:  # a new banner for each run
        proc = subprocess.Popen(
            [RUN_LOCAL],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    embedded = Embedded(proc=proc, port=port, data_dir=data_dir, output=output)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while b"Socket:" not in output.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"run-local.sh did not start:\n{output.read_text(errors='replace')}")
            time.sleep(0.05)
        yield embedded
    finally:
        # daphne runs in the foreground of the script: the whole group, as Ctrl-C would.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    with running_embedded(tmp_path_factory.mktemp("run-local")) as running:
        yield running


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def lib_sh(function: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """One set-up function of scripts/lib.sh, as the run scripts call it; prints the variables
    it exported that concern the secret key."""
    script = f'. scripts/lib.sh && {function} && {{ env | grep "^DJANGO_SECRET_KEY" || true; }}'
    base = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    return subprocess.run(
        ["bash", "-c", script],
        cwd=REPO_ROOT,
        env={**base, "PY": sys.executable, "WRENN_DATA_DIR": str(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_every_file_in_the_data_directory_is_readable_by_its_owner_alone(embedded: Embedded) -> None:
    """The SQLite database (and its WAL files), the secret key, both tokens, the demo key and the
    logs are 0600; the directory may be passed through (the bwrap user must reach the capsules
    below it), not listed."""
    assert mode(embedded.data_dir) == 0o711
    files = {path.name: mode(path) for path in embedded.data_dir.iterdir() if path.is_file()}
    made = {"db.sqlite3", "db.sqlite3-wal", "secret_key", "hostagent.token", "host.token", "demo.json"}
    assert made <= files.keys()
    assert {name: oct(m) for name, m in files.items() if m != 0o600} == {}


def test_daphne_reads_the_key_from_its_file_and_holds_no_copy_in_its_environment(
    embedded: Embedded,
) -> None:
    key = (embedded.data_dir / "secret_key").read_text().strip()
    assert len(key) >= 50
    daphnes = [pid for pid, (_, cmdline) in children_of(embedded.proc.pid).items() if "daphne" in cmdline]
    assert len(daphnes) == 1
    environ = Path(f"/proc/{daphnes[0]}/environ").read_bytes().split(b"\0")
    assert f"DJANGO_SECRET_KEY_FILE={embedded.data_dir / 'secret_key'}".encode() in environ
    assert not [entry for entry in environ if entry.startswith(b"DJANGO_SECRET_KEY=")]
    assert key.encode() not in b"\0".join(environ)


def get_capsules(embedded: Embedded, access_token: str) -> int:
    request = urllib.request.Request(  # noqa: S310 - local test URL
        f"{embedded.url}/v1/capsules", headers={"Authorization": f"Bearer {access_token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_jwt_forged_with_the_public_development_key_is_refused(embedded: Embedded) -> None:
    """The attack of issue 10: sign a token's own claims with the key in this repository."""
    body = json.dumps({"email": "demo@wrenn.local", "password": "wrenn-demo"}).encode()
    login = urllib.request.Request(  # noqa: S310 - local test URL
        f"{embedded.url}/v1/auth/login", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(login, timeout=10) as response:  # noqa: S310
        access = json.loads(response.read())["access"]
    assert get_capsules(embedded, access) == 200
    claims = jwt.decode(access, options={"verify_signature": False})
    forged = jwt.encode(claims, DEVELOPMENT_KEY, algorithm="HS256")
    assert get_capsules(embedded, forged) == 401


async def test_the_demo_capsule_still_gets_a_shell(embedded: Embedded) -> None:
    """The agent keeps the caller's umask, and its capsules reach their directories through
    the closed data directory."""
    capsule = embedded.banner_field("Socket").rsplit("/capsules/", 1)[1].split("/")[0]
    headers = [("X-API-Key", embedded.banner_field("API key"))]
    url = f"ws://127.0.0.1:{embedded.port}/v1/capsules/{capsule}/pty"
    async with connect(
        url, subprotocols=JSON_DIALECT, additional_headers=headers, max_size=None
    ) as websocket:
        term = Terminal.over_websocket(websocket)
        await term.start()
        await term.type("echo shell-$((6*7)) > ~/made && cat ~/made\n")
        await term.read_until(b"shell-42")
        await term.send(type="kill")


def test_the_secret_key_is_made_once_and_kept(embedded: Embedded) -> None:
    key_file = embedded.data_dir / "secret_key"
    before = key_file.read_text()
    result = lib_sh("export_secret_key", embedded.data_dir)
    assert result.stdout.split() == [f"DJANGO_SECRET_KEY_FILE={key_file}"]
    assert key_file.read_text() == before


def test_a_key_the_operator_set_is_left_alone(tmp_path: Path) -> None:
    result = lib_sh("export_secret_key", tmp_path, DJANGO_SECRET_KEY="the-operators-own-key")
    assert result.stdout.split() == ["DJANGO_SECRET_KEY=the-operators-own-key"]
    assert not (tmp_path / "secret_key").exists()


def test_files_an_earlier_version_left_readable_are_closed(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o755)
    for name in ("db.sqlite3", "db.sqlite3-wal", "host.token", "monitor.log"):
        (data_dir / name).write_text("")
        (data_dir / name).chmod(0o644)
    lib_sh("prepare_data_dir", data_dir)
    assert mode(data_dir) == 0o711
    assert {path.name: oct(mode(path)) for path in data_dir.iterdir()} == {
        "db.sqlite3": "0o600",
        "db.sqlite3-wal": "0o600",
        "host.token": "0o600",
        "monitor.log": "0o600",
    }


def call(
    embedded: Embedded, method: str, path: str, body: dict[str, object] | None = None
) -> tuple[int, dict]:
    request = urllib.request.Request(  # noqa: S310 - local test URL
        f"{embedded.url}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-API-Key": embedded.banner_field("API key"), "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"{}")


def test_a_restart_after_a_pause_shows_the_capsule_paused_and_takes_creates_at_once(tmp_path: Path) -> None:
    """Issue 10: once the banner is out, a restarted `make run` has its host online and its
    paused capsule paused: no window of 503 "no host has capacity" or status "missing"."""
    port, agent_port = free_port(), free_port()
    # A host silent for 2 s is dead: the pause between the runs makes it so.
    timing = {"WRENN_HOST_DEAD_AFTER_SEC": "2", "WRENN_HOST_HEARTBEAT_INTERVAL_SEC": "0.5"}
    with running_embedded(tmp_path, port, agent_port, **timing) as first:
        capsule = first.banner_field("Socket").rsplit("/capsules/", 1)[1].split("/")[0]
        assert call(first, "POST", f"/v1/capsules/{capsule}/pause")[0] == 200
    time.sleep(3)
    with running_embedded(tmp_path, port, agent_port, **timing) as second:
        status, shown = call(second, "GET", f"/v1/capsules/{capsule}")
        assert (status, shown["status"]) == (200, "paused")
        status, created = call(second, "POST", "/v1/capsules", {})
        assert status == 201, created
        assert created["status"] == "running"
        assert call(second, "POST", f"/v1/capsules/{capsule}/resume")[0] == 200
