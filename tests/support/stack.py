"""The production topology for integration tests: a host agent and daphne workers as subprocesses,
on a fresh PostgreSQL database and the Redis channel layer."""

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from .hostagent import REPO_ROOT, HostAgentProcess, free_port, start_hostagent

POSTGRES_URL = os.environ.get("WRENN_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("WRENN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_TIMEOUT = 30.0
BIN = Path(sys.executable).parent


@dataclass
class Stack:
    data_dir: Path
    agent: HostAgentProcess
    env: dict[str, str]
    database: str
    workers: list[tuple[int, subprocess.Popen[bytes]]] = field(default_factory=list)

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

    def start_worker(self) -> int:
        """Starts one more daphne process, exactly as the README runs it; returns its index."""
        port = free_port()
        log = (self.data_dir / f"daphne-{port}.log").open("ab")
        proc = subprocess.Popen(
            [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "wrenn.asgi:application"],
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

    def stop(self) -> None:
        for _, proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in self.workers:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.agent.stop()
        drop_database(self.database)


def wait_for_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args!r} exited with {proc.returncode}:\n{log.read_text(errors='replace')}"
            )
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local test URL
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


def start_stack(data_dir: Path, workers: int = 1, runtime: str = "auto") -> Stack:
    # As in production, the agent only answers calls that carry the shared token.
    token = secrets.token_hex(16)
    token_file = data_dir / "hostagent.token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    agent = start_hostagent(data_dir / "agent", runtime=runtime, token=token)
    database = create_database()
    base, _, _ = POSTGRES_URL.rpartition("/")
    env = {
        **os.environ,
        "DATABASE_URL": f"{base}/{database}",
        "REDIS_URL": REDIS_URL,
        "WRENN_DATA_DIR": str(data_dir / "web"),
        "WRENN_HOSTAGENT_ADDR": agent.address,
        "WRENN_HOSTAGENT_TOKEN_FILE": str(token_file),
        "WRENN_DEMO_PASSWORD": "it-demo-password",
        "PYTHONUNBUFFERED": "1",
    }
    stack = Stack(data_dir=data_dir, agent=agent, env=env, database=database)
    try:
        stack.manage("migrate", "--noinput")
        for _ in range(workers):
            stack.start_worker()
    except BaseException:
        stack.stop()
        raise
    return stack
