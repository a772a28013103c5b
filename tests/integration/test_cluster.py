"""`make cluster` as a user runs it: scripts/run-cluster.sh with two daphne workers behind HAProxy,
on a database of its own in the real PostgreSQL and the real Redis channel layer.

The script runs once for the module; the last test stops it and checks that nothing it started
is left running.
"""

from __future__ import annotations

import re
import signal
import stat
import urllib.request
from collections.abc import Iterator
from http.client import HTTPResponse
from pathlib import Path

import psycopg
import pytest
import redis
from websockets.asyncio.client import connect

from tests.support.cluster import Cluster, running_cluster, stat_fields
from tests.support.polling import wait_until
from tests.support.stack import POSTGRES_URL
from tests.support.terminal import JSON_DIALECT, Terminal

pytestmark = [pytest.mark.timeout(90)]

WORKERS = 2
WORKER_NAMES = {f"worker{i}" for i in range(1, WORKERS + 1)}


def still_running(pid: int, started: str) -> bool:
    """True while that very process exists and is not a zombie (a zombie has ended already)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z" and fields[19] == started


def kind(cmdline: str) -> str:
    for name in ("daphne", "haproxy", "hostagent", "monitor", "redis-server"):
        if name in cmdline:
            return name
    return "other"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster"), WORKERS) as running:
        yield running


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
        async with connect(
            url, subprotocols=JSON_DIALECT, additional_headers=headers, max_size=None
        ) as websocket:
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
    async with connect(url, subprotocols=JSON_DIALECT, additional_headers=headers, max_size=None) as first:
        assert first.response is not None
        first_worker = first.response.headers["X-Wrenn-Worker"]
        starter = Terminal.over_websocket(first)
        tag = (await starter.start())["tag"]
        for _ in range(3 * WORKERS):
            async with connect(
                url, subprotocols=JSON_DIALECT, additional_headers=headers, max_size=None
            ) as second:
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


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_directory_is_readable_by_the_script_alone(cluster: Cluster) -> None:
    """Keys, tokens, passwords and logs are 0600; the directory may be passed through (the bwrap
    user must reach the capsules below it), not listed."""
    assert mode(cluster.data_dir) == 0o711
    files = {path.name: mode(path) for path in cluster.data_dir.iterdir() if path.is_file()}
    made = {"secret_key", "hostagent.token", "host.token", "demo.json", "postgres.pgpass", "redis.conf"}
    assert made <= files.keys()
    assert {name: oct(m) for name, m in files.items() if m != 0o600} == {}


async def test_the_workers_connect_to_postgresql_as_a_role_of_their_own(cluster: Cluster) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:

        def users() -> set[str]:
            rows = conn.execute(
                "SELECT usename FROM pg_stat_activity WHERE datname = %s", [cluster.database]
            ).fetchall()
            return {row[0] for row in rows}

        await wait_until(lambda: bool(users()))  # heartbeats reach a worker every few seconds
        assert users() == {cluster.database}
        role = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [cluster.database])
        assert role.fetchone() == (False,)


def test_the_cluster_redis_answers_no_one_without_its_password(cluster: Cluster) -> None:
    """A Unix socket only the script's user may open, and even then a password."""
    socket_path = cluster.data_dir / "redis.sock"
    assert stat.S_ISSOCK(socket_path.stat().st_mode)
    assert mode(socket_path) == 0o700
    client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=5)
    try:
        with pytest.raises(redis.AuthenticationError, match="authenticat"):  # NOAUTH, or HELLO's own
            client.ping()
    finally:
        client.close()
    assert "redis.sock" in cluster.banner_field(r"Redis: (unix://:\*\*\*@\S+)")


def test_stopping_the_script_stops_everything_it_started(cluster: Cluster) -> None:
    kinds = sorted(kind(cmdline) for _, cmdline in cluster.children.values())
    expected = sorted(["daphne"] * WORKERS + ["haproxy", "hostagent", "monitor", "redis-server"])
    assert [k for k in kinds if k != "other"] == expected

    assert cluster.stop() == 128 + signal.SIGTERM
    left = {
        pid: cmdline for pid, (started, cmdline) in cluster.children.items() if still_running(pid, started)
    }
    assert left == {}
