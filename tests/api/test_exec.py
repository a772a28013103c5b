"""Exec and processes over REST against a real host agent: each call, each refusal, team isolation."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from django.test import override_settings

from capsules import agents
from capsules.models import Host, Sandbox
from tests.api.contract import ContractClient

pytestmark = pytest.mark.timeout(60)


def exec_path(capsule_id: str) -> str:
    return f"/v1/capsules/{capsule_id}/exec"


def processes_path(capsule_id: str, selector: str = "") -> str:
    return f"/v1/capsules/{capsule_id}/processes" + (f"/{selector}" if selector else "")


def run(client: ContractClient, capsule: Sandbox, script: str, **fields: Any) -> Any:
    return client.post(
        exec_path(capsule.pk), {"cmd": "/bin/sh", "args": ["-c", script], **fields}, format="json"
    )


def error(response: Any) -> tuple[int, str, str]:
    body = response.json()["error"]
    return response.status_code, body["code"], body["message"]


def test_a_command_answers_its_output_exit_code_and_duration(
    team_client: ContractClient, capsule: Sandbox
) -> None:
    response = run(team_client, capsule, "echo out; echo line2; echo err >&2; exit 4")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["sandbox_id"] == capsule.pk
    assert body["cmd"] == "/bin/sh"
    assert (body["stdout"], body["stderr"], body["exit_code"]) == ("out\nline2\n", "err\n", 4)
    assert body["encoding"] == "utf-8"
    assert body["duration_ms"] >= 0
    assert body["timed_out"] is False


def test_envs_and_cwd_reach_the_command(key_client: ContractClient, capsule: Sandbox) -> None:
    run(key_client, capsule, "mkdir -p sub")
    response = run(key_client, capsule, 'echo "$GREETING"; pwd', envs={"GREETING": "hello"}, cwd="sub")
    assert response.json()["stdout"].splitlines()[0] == "hello"
    assert response.json()["stdout"].splitlines()[1].endswith("/sub")


def test_binary_output_comes_back_in_base64(key_client: ContractClient, capsule: Sandbox) -> None:
    response = run(key_client, capsule, "printf '\\377\\376ok'; printf 'plain' >&2")
    body = response.json()
    assert body["encoding"] == "base64"
    assert base64.b64decode(body["stdout"]) == b"\xff\xfeok"
    assert base64.b64decode(body["stderr"]) == b"plain"


def test_a_timeout_kills_the_command_and_says_so(key_client: ContractClient, capsule: Sandbox) -> None:
    response = run(key_client, capsule, "echo before; sleep 30 & wait", timeout_sec=1)
    body = response.json()
    assert response.status_code == 200
    assert body["timed_out"] is True
    assert body["exit_code"] == 137
    assert body["stdout"] == "before\n"


@override_settings(WRENN_EXEC_OUTPUT_LIMIT_BYTES=1000)
def test_output_beyond_the_limit_keeps_the_tail_and_counts_the_rest(
    key_client: ContractClient, capsule: Sandbox
) -> None:
    response = run(key_client, capsule, "seq 1 2000; echo é >&2")
    body = response.json()
    produced = len("".join(f"{n}\n" for n in range(1, 2001)))
    assert len(body["stdout"]) == 1000
    assert body["stdout"].endswith("1999\n2000\n")
    assert body["stdout_dropped_bytes"] == produced - 1000
    assert body["stderr"] == "é\n"
    assert body["stderr_dropped_bytes"] == 0


def test_a_background_command_answers_202_and_is_listed_signalled_and_gone(
    key_client: ContractClient, capsule: Sandbox
) -> None:
    response = key_client.post(
        exec_path(capsule.pk), {"cmd": "sleep", "args": ["3210"], "background": True}, format="json"
    )
    assert response.status_code == 202, response.content
    started = response.json()
    assert started["tag"].startswith("proc-")
    assert len(started["tag"]) == len("proc-") + 8
    assert started["pid"] > 0
    listed = key_client.get(processes_path(capsule.pk)).json()["processes"]
    entry = next(p for p in listed if p["tag"] == started["tag"])
    assert (entry["pid"], entry["cmd"], entry["args"]) == (started["pid"], "sleep", ["3210"])
    assert entry["owner"].startswith("key:")
    response = key_client.delete(processes_path(capsule.pk, str(started["pid"])))
    assert response.status_code == 204
    deadline = time.monotonic() + 10
    while any(
        p["tag"] == started["tag"] for p in key_client.get(processes_path(capsule.pk)).json()["processes"]
    ):
        assert time.monotonic() < deadline, "the killed process is still listed"
        time.sleep(0.05)


def test_a_chosen_tag_names_the_process_and_sigterm_can_be_asked_for(
    key_client: ContractClient, capsule: Sandbox
) -> None:
    key_client.post(
        exec_path(capsule.pk),
        {"cmd": "sleep", "args": ["99"], "background": True, "tag": "my-server"},
        format="json",
    )
    response = key_client.delete(processes_path(capsule.pk, "my-server") + "?signal=SIGTERM")
    assert response.status_code == 204
    again = key_client.post(
        exec_path(capsule.pk),
        {"cmd": "true", "background": True, "tag": "my-server"},
        format="json",
    )
    assert again.status_code == 409
    assert error(again)[1] == "conflict"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "cmd: is required"),
        ({"cmd": ""}, "cmd: must not be empty"),
        ({"cmd": 5}, "cmd: must be a string"),
        ({"cmd": "true", "args": "x"}, "args"),
        ({"cmd": "true", "timeout_sec": 0}, "timeout_sec"),
        ({"cmd": "true", "timeout_sec": 100000}, "timeout_sec: must be at most 3600"),
        ({"cmd": "true", "timeout_sec": "5"}, "timeout_sec: must be an integer"),
        ({"cmd": "true", "background": "yes"}, "background: must be true or false"),
        ({"cmd": "true", "tag": "../etc"}, "invalid tag"),
        ({"cmd": "true", "envs": {"A": 1}}, "envs"),
        ({"cmd": "true", "shell": True}, "unknown field 'shell'"),
        ({"cmd": "true", "envs": {"A=B": "c"}}, "invalid environment variable name"),
        ({"cmd": "/no/such/program"}, "cannot start '/no/such/program'"),
        ({"cmd": "true", "user": "mallory"}, "unknown user 'mallory'"),
    ],
)
def test_bad_requests_are_refused_with_what_is_wrong(
    key_client: ContractClient, capsule: Sandbox, body: dict[str, Any], message: str
) -> None:
    response = key_client.post(exec_path(capsule.pk), body, format="json")
    status, code, text = error(response)
    assert (status, code) == (400, "invalid_request"), text
    assert message in text


def test_bad_json_is_refused(key_client: ContractClient, capsule: Sandbox) -> None:
    response = key_client.post(exec_path(capsule.pk), "{not json", content_type="application/json")
    assert response.status_code == 400


def test_unknown_processes_and_bad_selectors_and_signals(
    key_client: ContractClient, capsule: Sandbox
) -> None:
    assert error(key_client.delete(processes_path(capsule.pk, "4000000")))[:2] == (404, "not_found")
    assert error(key_client.delete(processes_path(capsule.pk, "proc-00000000")))[:2] == (404, "not_found")
    status, code, text = error(key_client.delete(processes_path(capsule.pk, "0042")))
    assert (status, code) == (400, "invalid_request")
    assert "leading zeros" in text
    status, code, text = error(key_client.delete(processes_path(capsule.pk, "99999999999")))
    assert (status, code) == (400, "invalid_request")
    status, code, text = error(key_client.delete(processes_path(capsule.pk, "1") + "?signal=SIGSEGV"))
    assert (status, code) == (400, "invalid_request")
    assert "unknown signal 'SIGSEGV'" in text


def test_another_team_s_capsule_answers_like_a_missing_one(
    key_client: ContractClient, other_capsule: Sandbox
) -> None:
    for response in (
        run(key_client, other_capsule, "id"),
        key_client.get(processes_path(other_capsule.pk)),
        key_client.delete(processes_path(other_capsule.pk, "1")),
        run(key_client, Sandbox(pk="cl-00000000000000000000"), "id"),
    ):
        status, code, _ = error(response)
        assert (status, code) == (404, "not_found")


def test_no_credentials_are_refused(client: ContractClient, capsule: Sandbox) -> None:
    assert run(client, capsule, "id").status_code == 401
    assert client.get(processes_path(capsule.pk)).status_code == 401


def test_a_capsule_that_is_not_running_refuses_commands(key_client: ContractClient, capsule: Sandbox) -> None:
    assert key_client.post(f"/v1/capsules/{capsule.pk}/pause").status_code == 200
    for response in (run(key_client, capsule, "id"), key_client.get(processes_path(capsule.pk))):
        status, code, text = error(response)
        assert (status, code) == (409, "invalid_state")
        assert "capsule is paused" in text


def test_a_host_that_does_not_answer_is_reported(
    key_client: ContractClient, capsule: Sandbox, host: Host
) -> None:
    Host.objects.filter(pk=host.pk).update(address="127.0.0.1:9")  # nothing listens on discard
    try:
        status, code, text = error(run(key_client, capsule, "id"))
        assert (status, code) == (503, "host_unavailable")
        assert text == agents.HOST_UNREACHABLE
    finally:
        Host.objects.filter(pk=host.pk).update(address=host.address)
    Host.objects.filter(pk=host.pk).update(status=Host.Status.UNREACHABLE)
    assert error(key_client.get(processes_path(capsule.pk)))[:2] == (503, "host_unavailable")
