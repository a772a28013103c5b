"""Sandbox runtimes: how a capsule's process is launched (bubblewrap or plain processes).

A runtime turns a start request into a `LaunchSpec`: the program, arguments, environment,
working directory and host user that `hostagent.spawn` forks under a new PTY.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from hostagent.errors import InvalidArgument

log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_ENV = {"PATH": DEFAULT_PATH, "TERM": "xterm-256color", "LANG": "C.UTF-8"}
ENV_NAME_RE = re.compile(r"^[^=\x00]+$")


class RuntimeUnavailable(Exception):
    """The runtime asked for cannot work on this host."""


@dataclass(frozen=True)
class LaunchRequest:
    cmd: str
    args: list[str]
    envs: dict[str, str]
    cwd: str
    user: str


@dataclass
class LaunchSpec:
    """What to exec in the child: `file` is looked up in env's PATH when it has no slash."""

    file: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    uid: int | None = None
    gid: int | None = None
    groups: list[int] = field(default_factory=list)
    # Shown in error messages: the command the caller asked for, not a wrapper like bwrap.
    display: str = ""
    # The child only starts a new session and the command takes the PTY as its controlling
    # terminal itself (in its own pid namespace, see BwrapRuntime); otherwise the child does.
    terminal_inside: bool = False


def validate_request(request: LaunchRequest) -> None:
    """Reject what execve would choke on, with a message naming the culprit."""
    for value in (request.cmd, *request.args, request.cwd, request.user):
        if "\x00" in value:
            raise InvalidArgument("cmd, args, cwd and user must not contain NUL bytes")
    for name, value in request.envs.items():
        if not ENV_NAME_RE.match(name):
            raise InvalidArgument(f"invalid environment variable name {name!r}")
        if "\x00" in value:
            raise InvalidArgument(f"environment variable {name} must not contain NUL bytes")


class Runtime(ABC):
    name: ClassVar[str]

    def prepare_sandbox(self, root: Path) -> None:
        """Create (or repair after a restart) what the runtime needs in a capsule directory."""
        (root / "home").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    @abstractmethod
    def launch_spec(self, sandbox_id: str, root: Path, request: LaunchRequest) -> LaunchSpec: ...


def _own_user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


class ProcessRuntime(Runtime):
    """Plain host processes: for development only, it isolates nothing."""

    name = "process"

    def launch_spec(self, sandbox_id: str, root: Path, request: LaunchRequest) -> LaunchSpec:
        home = root / "home"
        own = _own_user_name()
        user = request.user or own
        uid = gid = None
        groups: list[int] = []
        if user != own:
            try:
                entry = pwd.getpwnam(user)
            except KeyError:
                raise InvalidArgument(f"unknown user '{user}'") from None
            if os.geteuid() != 0:
                raise InvalidArgument(
                    f"cannot run as user '{user}': the host agent runs as '{own}', not as root"
                )
            uid, gid = entry.pw_uid, entry.pw_gid
            groups = os.getgrouplist(user, gid)
        env = {**BASE_ENV, "HOME": str(home), "USER": user, "LOGNAME": user, "SHELL": "/bin/bash"}
        env.update(request.envs)
        return LaunchSpec(
            file=request.cmd,
            argv=[request.cmd, *request.args],
            env=env,
            cwd=str(home / request.cwd) if request.cwd else str(home),
            uid=uid,
            gid=gid,
            groups=groups,
            display=request.cmd,
        )


PROCESS_WARNING = (
    "runtime=process ISOLATES NOTHING: capsule processes run as ordinary host processes of "
    "this agent's user and can read and change everything that user can. Use it for "
    "development only; install bubblewrap (Debian package 'bubblewrap') for isolation."
)


def choose_runtime(name: str, data_dir: Path, sandbox_uid: int) -> Runtime:
    """Pick the runtime for `--runtime name` (auto, bwrap or process)."""
    from hostagent.bwrap import BwrapRuntime  # bwrap imports this module

    if name not in ("auto", "bwrap", "process"):
        raise RuntimeUnavailable(f"unknown runtime {name!r} (expected auto, bwrap or process)")
    if name != "process":
        binary = shutil.which("bwrap")
        problem: str | None
        if binary is None:
            problem = "bwrap is not on PATH"
        else:
            runtime = BwrapRuntime(binary, sandbox_uid=sandbox_uid)
            problem = runtime.probe(data_dir / "sandboxes")
            if problem is None:
                return runtime
        if name == "bwrap":
            raise RuntimeUnavailable(f"the bwrap runtime cannot work here: {problem}")
        log.warning("bubblewrap unavailable (%s); falling back to plain processes", problem)
    log.warning("%s", PROCESS_WARNING)
    return ProcessRuntime()
