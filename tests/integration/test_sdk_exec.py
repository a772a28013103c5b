"""Wrenn's published SDK 0.3.0 runs commands and git in a capsule, as an agent using it would:
`capsule.commands.run/list/kill/connect/stream` and `capsule.git.*`, against the real stack."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.sdk import Sdk, sdk_python
from tests.support.stack import Stack, running_stack

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def exec_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(Path(tmp_path_factory.mktemp("exec-stack"))) as running:
        yield running


@pytest.fixture(scope="module")
def sdk(exec_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Sdk:
    demo = exec_stack.demo()
    return Sdk(
        "0.3.0",
        sdk_python("0.3.0"),
        f"{exec_stack.base_url}/api",
        demo["api_key"],
        demo["capsule_id"],
        tmp_path_factory.mktemp("sdk-exec-cwd"),
    )


def results(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The script's emitted lines, merged."""
    merged: dict[str, Any] = {}
    for line in lines:
        merged.update(line)
    return merged


def test_run_returns_stdout_stderr_and_the_exit_code(sdk: Sdk) -> None:
    got = results(
        sdk.script(
            """
r = capsule.commands.run("echo one; echo two; echo oops >&2; exit 3")
emit(stdout=r.stdout, stderr=r.stderr, exit_code=r.exit_code, duration=r.duration_ms)
ok = capsule.commands.run("true")
emit(ok=ok.exit_code)
"""
        )
    )
    assert got["stdout"] == "one\ntwo\n"
    assert got["stderr"] == "oops\n"
    assert got["exit_code"] == 3
    assert got["ok"] == 0
    assert isinstance(got["duration"], int)


def test_run_takes_envs_and_cwd_and_runs_as_root_in_root_s_home(sdk: Sdk) -> None:
    got = results(
        sdk.script(
            """
home = capsule.commands.run("id -un; pwd")
capsule.commands.run("mkdir -p /tmp/work")
there = capsule.commands.run('echo "$NAME"; pwd', envs={"NAME": "wrenn"}, cwd="/tmp/work")
emit(home=home.stdout, there=there.stdout)
"""
        )
    )
    assert got["home"] == "root\n/root\n"
    assert got["there"] == "wrenn\n/tmp/work\n"


def test_a_timeout_reaches_the_sdk_as_a_killed_command(sdk: Sdk) -> None:
    got = results(
        sdk.script(
            """
r = capsule.commands.run("echo started; sleep 20", timeout=1)
emit(stdout=r.stdout, exit_code=r.exit_code)
"""
        )
    )
    assert got == {"stdout": "started\n", "exit_code": 137}


def test_background_runs_are_listed_connected_to_and_killed(sdk: Sdk) -> None:
    got = results(
        sdk.script(
            """
handle = capsule.commands.run("for i in 1 2 3; do echo tick-$i; sleep 0.2; done; sleep 600", background=True)
emit(pid=handle.pid, tag=handle.tag)
listed = [p for p in capsule.commands.list() if p.pid == handle.pid]
emit(listed_tag=listed[0].tag, listed_cmd=listed[0].cmd)
seen = ""
for event in capsule.commands.connect(handle.pid):
    if event.type == "stdout":
        seen += event.data
    if "tick-3" in seen:
        break
emit(seen=seen)
capsule.commands.kill(handle.pid)
import time
deadline = time.monotonic() + 10
while any(p.pid == handle.pid for p in capsule.commands.list()):
    assert time.monotonic() < deadline, "still listed after kill"
    time.sleep(0.1)
emit(gone=True)
try:
    capsule.commands.kill(handle.pid)
except sdk.WrennNotFoundError as exc:
    emit(second_kill=type(exc).__name__)
"""
        )
    )
    assert got["tag"].startswith("proc-")
    assert got["listed_tag"] == got["tag"]
    assert got["listed_cmd"] == "/bin/sh"
    # From where the process is now, as the reference attaches: a suffix of its output, whole.
    assert got["seen"].endswith("tick-3\n")
    assert "tick-1\ntick-2\ntick-3\n".endswith(got["seen"])
    assert got["gone"] is True
    assert got["second_kill"] == "WrennNotFoundError"


def test_connect_sees_the_exit_of_a_background_run(sdk: Sdk) -> None:
    got = results(
        sdk.script(
            """
handle = capsule.commands.run("sleep 0.5; echo finished; exit 5", background=True, tag="short-job")
events = [
    (e.type, getattr(e, "data", None), getattr(e, "exit_code", None))
    for e in capsule.commands.connect(handle.pid)
]
emit(events=events, tag=handle.tag)
"""
        )
    )
    assert got["tag"] == "short-job"
    kinds = [kind for kind, _, _ in got["events"]]
    assert kinds[0] == "start"
    assert ["stdout", "finished\n", None] in got["events"]
    assert got["events"][-1] == ["exit", None, 5]


def test_stream_runs_a_command_and_yields_its_events_in_order(sdk: Sdk) -> None:
    got = results(
        sdk.script(
            """
script = "printf 'a\\\\nb\\\\n'; printf 'e\\\\n' >&2; exit 2"
events = [
    (e.type, getattr(e, "data", None), getattr(e, "exit_code", None))
    for e in capsule.commands.stream(script)
]
emit(events=events)
listed = capsule.commands.stream("ls", ["-d", "/root"])
emit(ls=[(e.type, getattr(e, "data", None)) for e in listed])
"""
        )
    )
    events = got["events"]
    assert events[0][0] == "start"
    assert "".join(data for kind, data, _ in events if kind == "stdout") == "a\nb\n"
    assert "".join(data for kind, data, _ in events if kind == "stderr") == "e\n"
    assert events[-1] == ["exit", None, 2]
    assert ["stdout", "/root\n"] in got["ls"]


def test_git_works_end_to_end_through_exec(sdk: Sdk) -> None:
    got = results(
        sdk.script(
            """
repo = "/root/project"
capsule.commands.run(f"mkdir -p {repo}")
capsule.git.init(repo, initial_branch="main")
capsule.git.configure_user("Wrenn Test", "test@example.com", scope="local", cwd=repo)
emit(name=capsule.git.get_config("user.name", cwd=repo))
capsule.commands.run(f"echo hello > {repo}/README")
capsule.git.add(all=True, cwd=repo)
status = capsule.git.status(cwd=repo)
emit(staged=[f.path for f in status.files if f.index_status not in (" ", "?")], branch=status.branch)
capsule.git.commit("first commit", cwd=repo)
capsule.git.create_branch("feature", cwd=repo)
capsule.git.checkout_branch("feature", cwd=repo)
branches = capsule.git.branches(cwd=repo)
emit(branches=sorted(b.name for b in branches), current=[b.name for b in branches if b.is_current])
emit(log=capsule.commands.run("git log --format=%s", cwd=repo).stdout)
"""
        )
    )
    assert got["name"] == "Wrenn Test"
    assert got["staged"] == ["README"]
    assert got["branch"] == "main"
    assert got["branches"] == ["feature", "main"]
    assert got["current"] == ["feature"]
    assert got["log"] == "first commit\n"


def test_sdk_errors_for_a_bad_command_and_a_missing_process(sdk: Sdk) -> None:
    lines = sdk.script(
        """
try:
    capsule.commands.run("exit 0", cwd="/no/such/dir")
except sdk.WrennError as exc:
    emit(bad_cwd=[type(exc).__name__, exc.code, exc.status_code, str(exc)])
capsule.commands.kill(4000000)
""",
        expect_failure=True,
    )
    got = results(lines)
    assert got["bad_cwd"][:3] == ["WrennValidationError", "invalid_request", 400]
    assert "/no/such/dir" in got["bad_cwd"][3]
    assert (got["error"], got["code"], got["status"]) == ("WrennNotFoundError", "not_found", 404)
    json.dumps(got)  # every field the script emitted was JSON
