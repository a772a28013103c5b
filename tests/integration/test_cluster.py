"""`make cluster` as a user runs it: scripts/run-cluster.sh with two daphne workers behind HAProxy,
on a database of its own in the real PostgreSQL and the real Redis channel layer.

The script runs once for the module; the last test stops it and checks that nothing it started
is left running.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPResponse
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.support.hostagent import REPO_ROOT, _let_sandbox_user_through, free_port
from tests.support.stack import POSTGRES_URL, REDIS_URL, drop_database
from tests.support.terminal import Terminal

pytestmark = [pytest.mark.timeout(90)]

WORKERS = 2
WORKER_NAMES = {f"worker{i}" for i in range(1, WORKERS + 1)}
BANNER_END = "Ctrl-C stops everything."
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass
class Cluster:
    proc: subprocess.Popen[bytes]
    port: int
    database: str
    output: Path
    # The script's own children while it runs: pid -> (start time, command line).
    children: dict[int, tuple[str, str]]

    @property
    def banner(self) -> str:
        return self.output.read_text(errors="replace")

    def banner_field(self, pattern: str) -> str:
        match = re.search(pattern, self.banner)
        assert match, f"{pattern!r} is not in the banner:\n{self.banner}"
        return match.group(1)

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The end of one of the script's logs (worker1.log, haproxy.log, …), for failure messages."""
        path = self.output.parent / "data" / name
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        """SIGTERM to the script alone, as a supervisor would send; it must stop its children."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Only so that a broken script leaves nothing behind; the test has failed already.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


def require_haproxy() -> None:
    """CI installs HAProxy (.ci/run); elsewhere try as `make cluster` does, or skip."""
    if shutil.which("haproxy"):
        return
    installer = REPO_ROOT / "scripts" / "install-system-packages.sh"
    result = subprocess.run([installer, "haproxy"], capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0 or not shutil.which("haproxy"):
        pytest.skip(f"HAProxy is not installed and cannot be installed here: {result.stderr.strip()}")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_run(count: int) -> int:
    """A free port whose next ``count - 1`` ports are free too: the proxy's and the workers'."""
    for _ in range(100):
        base = free_port()
        if base + count <= 65535 and all(port_is_free(base + i) for i in range(1, count)):
            return base
    raise RuntimeError(f"found no {count} consecutive free ports")


def stat_fields(pid: int) -> list[str] | None:
    """Fields 3 onwards of /proc/<pid>/stat (state, ppid, …), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def children_of(parent: int) -> dict[int, tuple[str, str]]:
    found: dict[int, tuple[str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        if fields is None or int(fields[1]) != parent:
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found[int(entry.name)] = (fields[19], cmdline)  # field 22: start time, against pid reuse
    return found


def still_running(pid: int, started: str) -> bool:
    """True while that very process exists and is not a zombie (a zombie has ended already)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z" and fields[19] == started


def kind(cmdline: str) -> str:
    for name in ("daphne", "haproxy", "hostagent", "monitor"):
        if name in cmdline:
            return name
    return "other"


def wait_for_banner(proc: subprocess.Popen[bytes], output: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while BANNER_END not in output.read_text(errors="replace"):
        if proc.poll() is not None:
            raise RuntimeError(f"run-cluster.sh exited with {proc.returncode}:\n{output.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"run-cluster.sh printed no banner in time:\n{output.read_text()}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_haproxy()
    workdir = tmp_path_factory.mktemp("cluster")
    data_dir = workdir / "data"
    data_dir.mkdir()
    _let_sandbox_user_through(data_dir)
    database = f"wrenn_cluster_{secrets.token_hex(4)}"  # created by the script itself
    port = free_port_run(WORKERS + 1)
    env = {
        **os.environ,
        "WORKERS": str(WORKERS),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PY": sys.executable,
        "DATABASE_URL": f"{POSTGRES_URL.rpartition('/')[0]}/{database}",
        "REDIS_URL": REDIS_URL,
        "WRENN_DATA_DIR": str(data_dir),
        "WRENN_HOSTAGENT_ADDR": f"127.0.0.1:{free_port()}",
        "HOSTAGENT_CGROUP_ROOT": f"wrenn-{database}",
        "PYTHONUNBUFFERED": "1",
    }
    output = workdir / "run-cluster.out"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [REPO_ROOT / "scripts" / "run-cluster.sh"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Cluster(proc=proc, port=port, database=database, output=output, children={})
    try:
        wait_for_banner(proc, output)
        running.children = children_of(proc.pid)
        yield running
    finally:
        running.stop()
        drop_database(database)


def get(url: str) -> HTTPResponse:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - local test URL
        response.read()
        result: HTTPResponse = response
        return result


def test_requests_through_the_proxy_reach_every_worker(cluster: Cluster) -> None:
    answered_by: list[str] = []
    while set(answered_by) != WORKER_NAMES and len(answered_by) < 10 * WORKERS:
        response = get(f"{cluster.url}/admin/login/")
        assert response.status == 200
        answered_by.append(response.headers["X-Wrenn-Worker"])
    assert set(answered_by) == WORKER_NAMES, f"{answered_by}\n{cluster.log_tail('haproxy.log')}"


def test_the_banner_shows_each_worker_on_its_own_port(cluster: Cluster) -> None:
    workers = dict(re.findall(r"Worker (\d+):\s+(http://\S+)", cluster.banner))
    assert workers == {str(i): f"http://127.0.0.1:{cluster.port + i}/" for i in range(1, WORKERS + 1)}
    for url in workers.values():
        response = get(f"{url}admin/login/")
        assert response.status == 200
        assert response.headers["X-Wrenn-Worker"] is None  # only the proxy adds it


async def test_terminals_through_the_proxy_run_on_every_worker(cluster: Cluster) -> None:
    """Sockets opened one after another land on different workers, and each gets a shell."""
    capsule = cluster.banner_field(r"Socket:\s+ws://\S+/v1/capsules/(cl-[0-9a-f]+)/pty")
    headers = [("X-API-Key", cluster.banner_field(r"API key:\s+(wrn_\S+)"))]
    seen: set[str] = set()
    for attempt in range(3 * WORKERS):
        url = f"ws://127.0.0.1:{cluster.port}/v1/capsules/{capsule}/pty"
        async with connect(url, additional_headers=headers, max_size=None) as websocket:
            assert websocket.response is not None
            worker = websocket.response.headers["X-Wrenn-Worker"]
            term = Terminal.over_websocket(websocket)
            await term.start()
            await term.type(f"echo {attempt}-$((6*7))-via-{worker}\n")
            await term.read_until(f"{attempt}-42-via-{worker}".encode())
            await term.send(type="kill")
        seen.add(worker)
        if seen == WORKER_NAMES:
            break
    assert seen == WORKER_NAMES, cluster.log_tail("haproxy.log")


async def test_a_session_started_on_one_worker_is_joined_on_another(cluster: Cluster) -> None:
    """Two windows through the proxy: the second lands on the other worker and joins by tag."""
    capsule = cluster.banner_field(r"Socket:\s+ws://\S+/v1/capsules/(cl-[0-9a-f]+)/pty")
    headers = [("X-API-Key", cluster.banner_field(r"API key:\s+(wrn_\S+)"))]
    url = f"ws://127.0.0.1:{cluster.port}/v1/capsules/{capsule}/pty"
    async with connect(url, additional_headers=headers, max_size=None) as first:
        assert first.response is not None
        first_worker = first.response.headers["X-Wrenn-Worker"]
        starter = Terminal.over_websocket(first)
        tag = (await starter.start())["tag"]
        for _ in range(3 * WORKERS):
            async with connect(url, additional_headers=headers, max_size=None) as second:
                assert second.response is not None
                if second.response.headers["X-Wrenn-Worker"] == first_worker:
                    continue
                viewer = Terminal.over_websocket(second)
                await viewer.send(type="connect", tag=tag)
                await viewer.type("echo joined-$((40+2))\n")
                await viewer.read_until(b"joined-42")
                await starter.read_until(b"joined-42")
                await viewer.send(type="kill")
                return
    raise AssertionError(f"every socket landed on {first_worker}\n{cluster.log_tail('haproxy.log')}")


def test_stopping_the_script_stops_everything_it_started(cluster: Cluster) -> None:
    kinds = sorted(kind(cmdline) for _, cmdline in cluster.children.values())
    expected = sorted(["daphne"] * WORKERS + ["haproxy", "hostagent", "monitor"])
    assert [k for k in kinds if k != "other"] == expected

    assert cluster.stop() == 128 + signal.SIGTERM
    left = {
        pid: cmdline for pid, (started, cmdline) in cluster.children.items() if still_running(pid, started)
    }
    assert left == {}
