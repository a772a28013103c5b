"""The production topology for integration tests: a host agent, daphne workers and the monitor as
subprocesses, on a fresh PostgreSQL database and the Redis channel layer."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from .hostagent import REPO_ROOT, HostAgentProcess, free_port, start_hostagent

POSTGRES_URL = os.environ.get("WRENN_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("WRENN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_TIMEOUT = 30.0
BIN = Path(sys.executable).parent
# Short liveness periods, so that a killed agent is noticed within a test.
HEARTBEAT_INTERVAL = "0.5"
DEAD_AFTER = "3"


@dataclass
class Stack:
    data_dir: Path
    env: dict[str, str]
    database: str
    port: int
    agent_address: str
    agent_token: str
    host_token: str = ""
    agent: HostAgentProcess | None = None
    agent_args: list[str] = field(default_factory=list)
    # The agent's --runtime (auto: oci where runc works, else bwrap, else plain processes).
    runtime: str = "auto"
    # daphne's WebSocket keepalive: a ping after this many idle seconds, a close when no pong
    # comes within the second figure. Short by default, so a dead peer is noticed in a test; a
    # ping queues behind output already buffered for a socket, so floods need longer ones.
    ping: tuple[int, int] = (1, 2)
    workers: list[tuple[int, subprocess.Popen[bytes]]] = field(default_factory=list)
    monitor: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.workers[0][0]}"

    def ws_url(self, worker: int = 0) -> str:
        return f"ws://127.0.0.1:{self.workers[worker][0]}"

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def demo(self) -> dict[str, Any]:
        return json.loads(self.manage("demo", "--json"))

    def start_agent(self) -> HostAgentProcess:
        """(Re)starts the host agent on its address and data, heartbeating to the first worker."""
        self.agent = start_hostagent(
            self.data_dir / "agent",
            runtime=self.runtime,
            token=self.agent_token,
            address=self.agent_address,
            env={"HOSTAGENT_REGISTER_TOKEN": self.host_token},
            args=[
                "--control-plane",
                f"http://127.0.0.1:{self.port}",
                "--heartbeat-interval",
                HEARTBEAT_INTERVAL,
                "--cgroup-root",
                f"wrenn-stack-{self.database}",
                *self.agent_args,
            ],
        )
        return self.agent

    def start_worker(self, port: int | None = None) -> int:
        """Starts one more daphne process, exactly as docs/operations.md runs it; returns its index."""
        port = port or free_port()
        log = (self.data_dir / f"daphne-{port}.log").open("ab")
        proc = subprocess.Popen(
            [
                *(str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port)),
                *("--ping-interval", str(self.ping[0]), "--ping-timeout", str(self.ping[1])),
                "wrenn.asgi:application",
            ],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for_http(f"http://127.0.0.1:{port}/admin/login/", proc, self.data_dir / f"daphne-{port}.log")
        self.workers.append((port, proc))
        return len(self.workers) - 1

    def start_monitor(self) -> None:
        log = (self.data_dir / "monitor.log").open("ab")
        self.monitor = subprocess.Popen(
            [sys.executable, "manage.py", "monitor", "--interval", "0.5"],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def stop(self) -> None:
        processes = [proc for _, proc in self.workers] + ([self.monitor] if self.monitor else [])
        for proc in processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.agent is not None:
            self.agent.stop()
        drop_database(self.database)


def wait_for_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args!r} exited with {proc.returncode}:\n{log.read_text(errors='replace')}"
            )
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(url, timeout=2) as response,  # noqa: S310 - local test URL
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer:\n{log.read_text(errors='replace')}")


def _admin_connection() -> psycopg.Connection[Any]:
    return psycopg.connect(POSTGRES_URL, autocommit=True)


def create_database() -> str:
    name = f"wrenn_it_{secrets.token_hex(4)}"
    with _admin_connection() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with _admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_role(name: str) -> None:
    """A role `make cluster` made for its workers (after the database it owns is gone)."""
    with _admin_connection() as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{name}"')


def start_stack(
    data_dir: Path,
    workers: int = 1,
    agent_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    ping: tuple[int, int] = (1, 2),
    runtime: str = "auto",
) -> Stack:
    """Database, then the host (registered with a token), its agent, daphne workers and the monitor."""
    database = create_database()
    base, _, _ = POSTGRES_URL.rpartition("/")
    # As in production, the agent only answers calls that carry the shared token.
    agent_token = secrets.token_hex(16)
    token_file = data_dir / "hostagent.token"
    token_file.write_text(agent_token)
    token_file.chmod(0o600)
    agent_address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "DATABASE_URL": f"{base}/{database}",
        "REDIS_URL": REDIS_URL,
        "WRENN_DATA_DIR": str(data_dir / "web"),
        "WRENN_HOSTAGENT_ADDR": agent_address,
        "WRENN_HOSTAGENT_TOKEN_FILE": str(token_file),
        "WRENN_DEMO_PASSWORD": "it-demo-password",
        "WRENN_HOST_HEARTBEAT_INTERVAL_SEC": HEARTBEAT_INTERVAL,
        "WRENN_HOST_DEAD_AFTER_SEC": DEAD_AFTER,
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    stack = Stack(
        data_dir=data_dir,
        env=env,
        database=database,
        port=free_port(),
        agent_address=agent_address,
        agent_token=agent_token,
        agent_args=list(agent_args or []),
        ping=ping,
        runtime=runtime,
    )
    try:
        stack.manage("migrate", "--noinput")
        stack.host_token = json.loads(stack.manage("create_host", agent_address, "--json"))["token"]
        stack.start_agent()
        stack.start_worker(stack.port)
        for _ in range(workers - 1):
            stack.start_worker()
        stack.start_monitor()
    except BaseException:
        stack.stop()
        raise
    return stack


@contextlib.contextmanager
def running_stack(data_dir: Path, **options: Any) -> Iterator[Stack]:
    """``start_stack(data_dir, **options)`` for the duration of a ``with`` block."""
    stack = start_stack(data_dir, **options)
    try:
        yield stack
    finally:
        stack.stop()
