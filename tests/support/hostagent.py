"""Start a real host agent (`python -m hostagent`) as a subprocess for tests."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc

from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from protos.rules import new_pty_tag

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


MNT_DETACH = 2  # <sys/mount.h>: a lazy unmount, as umount -l


def unmount_below(directory: Path) -> None:
    """Lazily unmounts every mount at or below ``directory``, the deepest first."""
    prefix = str(directory.resolve()).rstrip("/") + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    libc = ctypes.CDLL(None, use_errno=True)
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        # The system call rather than umount(8): a test's lane may start no process but agents.
        libc.umount2(os.fsencode(point), MNT_DETACH)


@dataclass
class HostAgentProcess:
    address: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    runtime: str = "auto"
    log_path: Path | None = None
    # The cgroup (below each hierarchy's root) holding the agent's capsules' cgroups.
    cgroup_root: str = ""
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    def stop(self) -> None:
        """SIGTERM, wait up to 10 s, then SIGKILL. Safe to call more than once."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        # A stopped agent leaves its capsules' disks mounted, as a restart expects (files survive
        # it); a test's agent must not leave them behind, or every run holds loop devices.
        unmount_below(self.data_dir)

    def log(self) -> str:
        """The agent's combined stdout and stderr so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def token_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def _answers(address: str, token: str | None) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.HostAgentStub(channel)
        try:
            stub.ListSandboxes(pb.ListSandboxesRequest(), timeout=1.0, metadata=token_metadata(token))
        except grpc.RpcError:
            return False
        return True


def _let_sandbox_user_through(path: Path) -> None:
    """As root, bwrap runs as an unprivileged uid that must traverse to the data dir.

    pytest's temporary directories are 0700; add search permission (x, not r) to the ones we own.
    """
    if os.geteuid() != 0:
        return
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid == 0 and not st.st_mode & 0o001:
            directory.chmod(st.st_mode | 0o011)


_POOLS = itertools.count()
_UID_BASES = itertools.count()
# The host resources start_hostagent chose for a data directory, kept in it: an agent started
# again on it (a restart, a crash) takes the same ones, and cleans up what the first one left.
_RESOURCES_FILE = ".test-agent-resources.json"


# The nftables tables and veth prefixes this run gave its agents (release_network_resources).
_HANDED_OUT: list[tuple[str, str]] = []


def release_network_resources() -> None:
    """Deletes what this run's agents may have left of their networks (an agent killed rather
    than stopped keeps its table and veths): once every agent is stopped, at the session's end."""
    if shutil.which("nft") is None or shutil.which("ip") is None:
        return
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout
    names = [line.split(": ")[1].split("@")[0] for line in links.splitlines() if ": " in line]
    for table, prefix in _HANDED_OUT:
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True, check=False)
        for name in names:
            if name.startswith(prefix):
                subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)
    _HANDED_OUT.clear()


def _own_host_resources(data_dir: Path, args: list[str], env: dict[str, str]) -> list[str]:
    """Options giving the agent capsule uid ranges, a network pool, an nftables table and a veth
    prefix of its own, unless `args` or `env` choose them."""
    kept = data_dir / _RESOURCES_FILE
    if kept.exists():
        chosen: dict[str, str] = json.loads(kept.read_text())
    else:
        # Uid ranges apart (up to 15 agents at once, 4,096 capsules each), and the /16s of 10.64/10
        # in turn, each from an offset of its own per run.
        tag = uuid.uuid4().hex[:6]
        chosen = {
            "--uid-base": str((1 << 20) + (os.getpid() + next(_UID_BASES)) % 15 * (1 << 28)),
            "--network-pool": f"10.{64 + (os.getpid() + next(_POOLS)) % 64}.0.0/16",
            "--network-table": f"wrenn_test_{tag}",
            "--network-prefix": f"w{tag[:5]}",
        }
        kept.write_text(json.dumps(chosen))
    _HANDED_OUT.append((chosen["--network-table"], chosen["--network-prefix"]))
    variables = {"--uid-base": "HOSTAGENT_UID_BASE", "--network-pool": "HOSTAGENT_NETWORK_POOL"}
    variables |= {
        "--network-table": "HOSTAGENT_NETWORK_TABLE",
        "--network-prefix": "HOSTAGENT_NETWORK_PREFIX",
    }
    extra: list[str] = []
    for option, value in chosen.items():
        if option not in args and variables[option] not in env:
            extra += [option, value]
    return extra


def start_hostagent(
    data_dir: Path,
    runtime: str = "auto",
    env: dict[str, str] | None = None,
    token: str | None = None,
    args: list[str] | None = None,
    address: str | None = None,
) -> HostAgentProcess:
    """Start an agent on a free port and wait until it answers ListSandboxes.

    With ``token`` the agent requires it on every call (HOSTAGENT_TOKEN); ``args`` are added to
    its command line; ``address`` (default: a free port) lets a restarted agent keep its address.
    Each agent gets its own cgroup root (unless ``args`` names one), so agents running side by
    side never see each other's capsule cgroups.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir.resolve()
    _let_sandbox_user_through(data_dir)
    address = address or f"127.0.0.1:{free_port()}"
    log_path = data_dir / "hostagent.log"
    log_file = log_path.open("ab")
    proc_env = {**os.environ, **(env or {})}
    if token:
        proc_env["HOSTAGENT_TOKEN"] = token
    extra_args = list(args or [])
    if "--cgroup-root" not in extra_args and "HOSTAGENT_CGROUP_ROOT" not in proc_env:
        extra_args += ["--cgroup-root", f"wrenn-test-{uuid.uuid4().hex[:12]}"]
    extra_args += _own_host_resources(data_dir, extra_args, proc_env)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hostagent",
            "--listen",
            address,
            "--data-dir",
            str(data_dir),
            "--runtime",
            runtime,
            *extra_args,
        ],
        cwd=REPO_ROOT,
        env=proc_env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    agent = HostAgentProcess(
        address=address,
        data_dir=data_dir,
        proc=proc,
        runtime=runtime,
        log_path=log_path,
        cgroup_root=extra_args[extra_args.index("--cgroup-root") + 1]
        if "--cgroup-root" in extra_args
        else "",
        _log_file=log_file,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            agent.stop()
            raise RuntimeError(f"host agent exited with {proc.returncode}:\n{agent.log()}")
        if _answers(address, token):
            return agent
        time.sleep(0.1)
    with contextlib.suppress(Exception):
        agent.stop()
    raise RuntimeError(f"host agent did not answer on {address} within {START_TIMEOUT}s:\n{agent.log()}")


# Tags shaped like the control plane's: `pty-` and 8 hex characters.
new_tag = new_pty_tag


STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


@dataclass
class Terminal:
    """One PtyAttach stream and the calls on its session (grpc.aio), for tests; input and resizes
    go over PtyInput streams, kills by the unary PtyKill.

    It collects output and checks that offsets are contiguous; `missed` events are recorded as
    (offset, bytes).
    """

    stub: Any
    sandbox_id: str
    tag: str
    call: Any
    output: bytearray = field(default_factory=bytearray)
    first_offset: int | None = None
    exit_code: int | None = None
    missed: list[tuple[int, int]] = field(default_factory=list)

    async def next_event(self, timeout: float = 30.0) -> Any:
        event = await asyncio.wait_for(self.call.read(), timeout)
        if event is grpc.aio.EOF:  # type: ignore[attr-defined]  # missing from grpc-stubs
            raise EOFError(f"pty stream {self.tag} ended without an exited event")
        kind = event.WhichOneof("event")
        if kind == "output":
            expected = self.next_offset
            if expected is not None and event.output.offset != expected:
                raise AssertionError(f"offset {event.output.offset}, expected {expected}")
            if self.first_offset is None:
                self.first_offset = event.output.offset
            self.output += event.output.data
        elif kind == "missed":
            if self.first_offset is not None:
                raise AssertionError(f"missed {event.missed} after output")
            self.missed.append((event.missed.offset, event.missed.bytes))
        elif kind == "exited":
            self.exit_code = event.exited.exit_code
        return event

    @property
    def next_offset(self) -> int | None:
        return None if self.first_offset is None else self.first_offset + len(self.output)

    async def expect(self, needle: bytes, timeout: float = 30.0) -> None:
        """Read until `needle` has appeared in the output."""
        async with asyncio.timeout(timeout):
            while needle not in self.output:
                if self.exit_code is not None:
                    raise AssertionError(f"exited before {needle!r} appeared: {bytes(self.output)!r}")
                await self.next_event(timeout)

    async def wait_exit(self, timeout: float = 30.0) -> int:
        async with asyncio.timeout(timeout):
            while self.exit_code is None:
                await self.next_event(timeout)
        return self.exit_code

    async def input_op(
        self, request: pb.PtyInputRequest, timeout: float = 30.0
    ) -> tuple[grpc.StatusCode, str]:
        """One op on a PtyInput stream of its own: the status and message it is acked with.

        A stream that ends instead (the session is unknown) raises its AioRpcError.
        """
        first = pb.PtyInputRequest(sandbox_id=self.sandbox_id, tag=self.tag)
        first.MergeFrom(request)
        call = self.stub.PtyInput(None, timeout=timeout)
        try:
            await call.write(first)
            ack = await call.read()
            if ack is grpc.aio.EOF:  # type: ignore[attr-defined]  # missing from grpc-stubs
                raise EOFError(f"input stream of {self.tag} ended without an ack")
            await call.done_writing()
            await call.code()  # the agent ends the stream once it is half-closed
            return STATUS_CODES[ack.code], ack.message
        finally:
            call.cancel()  # a no-op once the stream has ended

    async def send(self, data: bytes) -> None:
        await self._applied(pb.PtyInputRequest(data=data))

    async def resize(self, cols: int, rows: int) -> None:
        await self._applied(pb.PtyInputRequest(resize=pb.PtySize(cols=cols, rows=rows)))

    async def _applied(self, request: pb.PtyInputRequest) -> None:
        status = await self.input_op(request)
        if status != (grpc.StatusCode.OK, ""):
            raise AssertionError(f"{request.WhichOneof('op')} on {self.tag} refused: {status}")

    async def kill(self) -> None:
        await self.stub.PtyKill(pb.PtyKillRequest(sandbox_id=self.sandbox_id, tag=self.tag), timeout=30)


async def start_terminal(
    stub: Any, sandbox_id: str, cmd: str, *args: str, tag: str | None = None, **fields: Any
) -> tuple[Terminal, Any]:
    """Start a session; returns the terminal and its `started` event."""
    tag = tag or new_tag()
    request = pb.PtyAttachRequest(sandbox_id=sandbox_id, tag=tag, cmd=cmd, args=list(args), **fields)
    terminal = Terminal(stub, sandbox_id, tag, stub.PtyAttach(request))
    event = await terminal.next_event()
    if event.WhichOneof("event") != "started":
        raise AssertionError(f"expected started, got {event}")
    return terminal, event.started


async def attach_terminal(stub: Any, sandbox_id: str, tag: str, **fields: Any) -> Terminal:
    """Attach to a running session; returns once the agent has registered the stream.

    ``fields`` go into the request, e.g. ``resume=True, from_offset=n``.
    """
    call = stub.PtyAttach(pb.PtyAttachRequest(sandbox_id=sandbox_id, tag=tag, **fields))
    await asyncio.wait_for(call.initial_metadata(), 30)
    return Terminal(stub, sandbox_id, tag, call)


async def read_output(
    stub: Any, sandbox_id: str, tag: str, offset: int, max_bytes: int = 0, **fields: Any
) -> Any:
    """One PtyRead call: the session's buffered output from ``offset``."""
    request = pb.PtyReadRequest(sandbox_id=sandbox_id, tag=tag, offset=offset, max_bytes=max_bytes, **fields)
    return await stub.PtyRead(request, timeout=30)
