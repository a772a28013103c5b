"""Commands and processes in a capsule: the API's exec (foreground and background), the list of
the capsule's processes and signals to them, through the capsule's host agent.

The REST views call these (synchronous code); the exec and process sockets (pty/processes.py)
share the rules: selectors, signal names, tags, and what an agent's refusal answers.
"""

from __future__ import annotations

import base64
import secrets
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from django.conf import settings

from capsules import agents
from capsules.actions import ActionError, agent_address, record_activity
from capsules.models import Sandbox
from protos import hostagent_pb2 as pb
from protos import rules

PROCESS_TAG_PREFIX = "proc-"
# The kernel's largest pid_max (2^22): a larger number names no process anywhere.
MAX_PID = 1 << 22
SIGNALS = {
    name: int(getattr(signal, name))
    for name in (
        "SIGKILL",
        "SIGTERM",
        "SIGINT",
        "SIGHUP",
        "SIGQUIT",
        "SIGUSR1",
        "SIGUSR2",
        "SIGSTOP",
        "SIGCONT",
    )
}
DEFAULT_SIGNAL = "SIGKILL"


def new_process_tag() -> str:
    """A background process's tag, as Wrenn makes them: `proc-` and 8 hex characters."""
    return PROCESS_TAG_PREFIX + secrets.token_hex(4)


@dataclass(frozen=True)
class Selector:
    """A process named by the API: its pid (as the capsule sees it) or its tag."""

    pid: int = 0
    tag: str = ""

    def describe(self) -> str:
        return f"pid {self.pid}" if self.pid else self.tag


def parse_selector(value: str) -> Selector:
    """A path's `{selector}`: a pid in plain decimal (no sign, no leading zeros), else a tag."""
    if value.isascii() and value.isdigit():
        if value.startswith("0") or not 0 < int(value) < MAX_PID:
            raise ActionError(
                "invalid_request", f"invalid pid {value[:20]!r}: write it in decimal without leading zeros"
            )
        return Selector(pid=int(value))
    if not rules.is_tag(value):
        raise ActionError("invalid_request", rules.bad_tag(value))
    return Selector(tag=value)


def parse_signal(value: str | None) -> int:
    """`?signal=`: a name (SIGTERM, TERM, sigterm) from SIGNALS; SIGKILL when absent."""
    name = (value or DEFAULT_SIGNAL).strip().upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if name not in SIGNALS:
        raise ActionError("invalid_request", f"unknown signal {value!r}: use one of {', '.join(SIGNALS)}")
    return SIGNALS[name]


def agent_refusal(exc: grpc.RpcError, what: str) -> ActionError:
    """What a failed call to the agent about a command or a process answers the caller."""
    return ActionError(*agents.failure(exc, what, agents.REFUSALS))


@dataclass(frozen=True)
class Command:
    """What to run: validated by the API's serializer (capsules/api/serializers.py)."""

    cmd: str
    args: list[str] = field(default_factory=list)
    envs: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    user: str = ""
    tag: str = ""
    timeout_sec: int = 0

    def request(self, sandbox_id: str, owner: str, background: bool) -> pb.ProcessStartRequest:
        return pb.ProcessStartRequest(
            sandbox_id=sandbox_id,
            tag=self.tag or new_process_tag(),
            cmd=self.cmd,
            args=self.args,
            envs=self.envs,
            cwd=self.cwd,
            user=self.user,
            owner=owner,
            timeout_ms=self.timeout_sec * 1000,
            background=background,
        )


class Tail:
    """The last `limit` bytes of a stream, and how many came before them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.dropped = 0

    def add(self, data: bytes) -> None:
        self.kept += data
        excess = len(self.kept) - self.limit
        if excess > 0:
            del self.kept[:excess]
            self.dropped += excess

    def text_safe(self) -> bytes:
        """The kept bytes, less the tail of a UTF-8 character the cut split at their start."""
        if self.dropped:
            skip = 0
            while skip < min(3, len(self.kept)) and 0x80 <= self.kept[skip] <= 0xBF:
                skip += 1
            if skip:
                del self.kept[:skip]
                self.dropped += skip
        return bytes(self.kept)


@dataclass(frozen=True)
class ExecResult:
    pid: int
    stdout: bytes
    stderr: bytes
    exit_code: int
    timed_out: bool
    duration_ms: int
    stdout_dropped: int
    stderr_dropped: int

    def body(self, sandbox_id: str, cmd: str) -> dict[str, Any]:
        """The API's ExecResponse: text when both streams are UTF-8, else both in base64."""
        try:
            stdout, stderr, encoding = self.stdout.decode(), self.stderr.decode(), "utf-8"
        except UnicodeDecodeError:
            stdout = base64.b64encode(self.stdout).decode()
            stderr = base64.b64encode(self.stderr).decode()
            encoding = "base64"
        return {
            "sandbox_id": sandbox_id,
            "cmd": cmd,
            "pid": self.pid,
            "stdout": stdout,
            "stderr": stderr,
            "exit_code": self.exit_code,
            "duration_ms": self.duration_ms,
            "encoding": encoding,
            "timed_out": self.timed_out,
            "stdout_dropped_bytes": self.stdout_dropped,
            "stderr_dropped_bytes": self.stderr_dropped,
        }


def output_limit() -> int:
    return int(settings.WRENN_EXEC_OUTPUT_LIMIT_BYTES)


def run_command(sandbox: Sandbox, command: Command, owner: str) -> ExecResult:
    """Run `command` in the capsule and wait for it (at most its timeout, then its process group
    is killed); each stream keeps its last WRENN_EXEC_OUTPUT_LIMIT_BYTES."""
    address = agent_address(sandbox, "run a command")
    record_activity(sandbox.pk)
    request = command.request(sandbox.pk, owner, background=False)
    stub = agents.stub_for(address)
    out, err = Tail(output_limit()), Tail(output_limit())
    pid, exited = 0, None
    started = time.monotonic()
    # The agent ends the process at its timeout; the call's own deadline only guards against a
    # silent agent, after the time the process may take and the time its exit takes to report.
    deadline = command.timeout_sec + agents.rpc_timeout() if command.timeout_sec else None
    try:
        for event in stub.ProcessStart(request, timeout=deadline, metadata=agents.call_metadata()):
            kind = event.WhichOneof("event")
            if kind == "started":
                pid = event.started.pid
            elif kind == "output":
                (err if event.output.stream == pb.STDERR else out).add(event.output.data)
            elif kind == "exited":
                exited = event.exited
    except grpc.RpcError as exc:
        raise agent_refusal(exc, "run the command") from exc
    if exited is None:
        raise ActionError("agent_error", "the host agent ended the command's stream before its exit")
    record_activity(sandbox.pk)
    return ExecResult(
        pid=pid,
        stdout=out.text_safe(),
        stderr=err.text_safe(),
        exit_code=exited.exit_code,
        timed_out=exited.timed_out,
        duration_ms=int((time.monotonic() - started) * 1000),
        stdout_dropped=out.dropped,
        stderr_dropped=err.dropped,
    )


def start_background(sandbox: Sandbox, command: Command, owner: str) -> tuple[int, str]:
    """Start `command` in the background; returns its pid and tag."""
    address = agent_address(sandbox, "run a command")
    record_activity(sandbox.pk)
    request = command.request(sandbox.pk, owner, background=True)
    stub = agents.stub_for(address)
    try:
        for event in stub.ProcessStart(
            request, timeout=agents.rpc_timeout(), metadata=agents.call_metadata()
        ):
            if event.WhichOneof("event") == "started":
                return event.started.pid, event.started.tag
    except grpc.RpcError as exc:
        raise agent_refusal(exc, "start the command") from exc
    raise ActionError("agent_error", "the host agent did not report the process it started")


def list_processes(sandbox: Sandbox) -> list[dict[str, Any]]:
    """Every process in the capsule; `tag` is set for the ones the API started."""
    address = agent_address(sandbox, "list its processes")
    try:
        reply = agents.stub_for(address).ListProcesses(
            pb.ListProcessesRequest(sandbox_id=sandbox.pk),
            timeout=agents.rpc_timeout(),
            metadata=agents.call_metadata(),
        )
    except grpc.RpcError as exc:
        raise agent_refusal(exc, "list the processes") from exc
    return [
        {
            "pid": p.pid,
            "ppid": p.ppid,
            "tag": p.tag or None,
            "cmd": p.cmd,
            "args": list(p.args),
            "state": p.state,
            "owner": p.owner or None,
        }
        for p in reply.processes
    ]


def signal_process(sandbox: Sandbox, selector: Selector, signum: int) -> None:
    """Send `signum` to a process of the capsule: a started one's whole process group."""
    address = agent_address(sandbox, "signal its processes")
    record_activity(sandbox.pk)
    request = pb.SignalProcessRequest(
        sandbox_id=sandbox.pk, tag=selector.tag, pid=selector.pid, signal=signum
    )
    try:
        agents.stub_for(address).SignalProcess(
            request, timeout=agents.rpc_timeout(), metadata=agents.call_metadata()
        )
    except grpc.RpcError as exc:
        raise agent_refusal(exc, f"signal process {selector.describe()}") from exc
