"""The capsule endpoints against a real host agent: each operation, each refusal, and team isolation.

Destroyed capsules stay listed and readable with status `stopped`.
"""

from datetime import datetime, timedelta
from typing import Any

import grpc
import pytest
from django.utils import timezone

from capsules import actions, agents, hosts, validation
from capsules.models import Host, Sandbox, Team
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.api import error, iso
from tests.api.contract import ContractClient
from tests.support.hostagent import free_port

CAPSULES = "/v1/capsules"
Status = Sandbox.Status
DEFAULT_NETWORK = {"allow_internet": True, "allow_out": [], "deny_out": []}
LONG_AGO = timezone.now() - timedelta(days=1)


def url(sandbox: Sandbox, action: str = "") -> str:
    return f"{CAPSULES}/{sandbox.id}" + (f"/{action}" if action else "")


def capsule_json(sandbox: Sandbox) -> dict[str, Any]:
    sandbox.refresh_from_db()
    return {
        "id": sandbox.id,
        "status": sandbox.status,
        "template": sandbox.template,
        "vcpus": sandbox.vcpus,
        "memory_mb": sandbox.memory_mb,
        "timeout_sec": sandbox.timeout_sec,
        "created_at": iso(sandbox.created_at),
        "started_at": iso(sandbox.started_at),
        "last_active_at": iso(sandbox.last_active_at),
        "last_updated": iso(sandbox.last_updated),
        "metadata": sandbox.metadata,
        "disk_size_mb": sandbox.disk_size_mb,
        "network": sandbox.network,
        "events": [{**event, "at": iso(datetime.fromisoformat(event["at"]))} for event in sandbox.events],
        "isolation": sandbox.host.isolation if sandbox.host else None,
    }


def not_found(capsule_id: str) -> dict[str, Any]:
    return error("not_found", f"capsule {capsule_id} not found")


def agent_sandboxes(host: Host) -> set[str]:
    with grpc.insecure_channel(host.address) as channel:
        response = pb_grpc.HostAgentStub(channel).ListSandboxes(
            pb.ListSandboxesRequest(), timeout=10, metadata=agents.call_metadata()
        )
    return {sandbox.sandbox_id for sandbox in response.sandboxes}


def make_row(team: Team, host: Host | None, status: str = Status.RUNNING, **fields: Any) -> Sandbox:
    return Sandbox.objects.create(team=team, host=host, status=status, **fields)


# Create


def test_create_answers_201_with_the_running_capsule(team_client: ContractClient, host: Host) -> None:
    response = team_client.post(CAPSULES, {}, format="json")
    assert response.status_code == 201
    sandbox = Sandbox.objects.get(pk=response.json()["id"])
    assert response.json() == capsule_json(sandbox)
    assert sandbox.status == Status.RUNNING


def test_create_fills_in_the_defaults(key_client: ContractClient, host: Host) -> None:
    body = key_client.post(CAPSULES, {}, format="json").json()
    assert {k: body[k] for k in ("template", "vcpus", "memory_mb", "timeout_sec", "metadata")} == {
        "template": "minimal",
        "vcpus": 1,
        "memory_mb": 512,
        "timeout_sec": 300,
        "metadata": {},
    }


def test_create_without_a_body(key_client: ContractClient, host: Host) -> None:
    """Some clients POST nothing at all."""
    assert key_client.post(CAPSULES).status_code == 201


def test_create_starts_the_capsule_on_the_agent(key_client: ContractClient, host: Host) -> None:
    capsule_id = key_client.post(CAPSULES, {}, format="json").json()["id"]
    assert capsule_id in agent_sandboxes(host)


def test_create_for_the_callers_team(team_client: ContractClient, host: Host, team: Team) -> None:
    capsule_id = team_client.post(CAPSULES, {}, format="json").json()["id"]
    assert Sandbox.objects.get(pk=capsule_id).team == team


def test_create_with_every_field(key_client: ContractClient, host: Host) -> None:
    body = {
        "template": "minimal",
        "vcpus": 2,
        "memory_mb": 1024,
        "timeout_sec": 600,
        "metadata": {"env": "ci"},
    }
    response = key_client.post(CAPSULES, body, format="json")
    assert response.status_code == 201
    assert {k: response.json()[k] for k in body} == body


def test_create_raises_a_short_timeout_to_60(key_client: ContractClient, host: Host) -> None:
    response = key_client.post(CAPSULES, {"timeout_sec": 5}, format="json")
    assert response.json()["timeout_sec"] == 60


def test_create_with_nulls_takes_the_defaults(key_client: ContractClient, host: Host) -> None:
    response = key_client.post(CAPSULES, {"vcpus": None, "metadata": None}, format="json")
    assert response.status_code == 201
    assert (response.json()["vcpus"], response.json()["metadata"]) == (1, {})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"vcpus": "2"}, "vcpus: must be an integer"),
        ({"vcpus": True}, "vcpus: must be an integer"),
        ({"vcpus": 1.5}, "vcpus: must be an integer"),
        ({"memory_mb": "512"}, "memory_mb: must be an integer"),
        ({"timeout_sec": [60]}, "timeout_sec: must be an integer"),
        ({"template": 5}, "template: must be a string"),
        ({"template": ""}, "template: must not be empty"),
        ({"metadata": ["a"]}, "metadata: must be an object of strings"),
        ({"metadata": {"a": 1}}, "metadata: a: must be a string"),
        ({"vcpus": "x", "memory_mb": "y"}, "vcpus: must be an integer; memory_mb: must be an integer"),
    ],
)
def test_create_rejects_wrong_json_types(
    key_client: ContractClient, host: Host, body: dict[str, Any], message: str
) -> None:
    response = key_client.post(CAPSULES, body, format="json")
    assert response.status_code == 400
    assert response.json() == error("invalid_request", message)
    assert not Sandbox.objects.exists()


def test_create_rejects_an_unknown_field(key_client: ContractClient, host: Host) -> None:
    response = key_client.post(CAPSULES, {"vcpus": 1, "cpus": 2}, format="json")
    assert response.status_code == 400
    assert response.json() == error("invalid_request", "unknown field 'cpus'")


def test_create_names_every_unknown_field(key_client: ContractClient, host: Host) -> None:
    response = key_client.post(CAPSULES, {"cpus": 2, "disk": 1}, format="json")
    assert response.json() == error("invalid_request", "unknown fields 'cpus', 'disk'")


@pytest.mark.parametrize("body", ["[]", '"minimal"', "3", "null"])
def test_create_rejects_a_body_that_is_not_an_object(
    key_client: ContractClient, host: Host, body: str
) -> None:
    response = key_client.post(CAPSULES, body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == error("invalid_request", "request body must be a JSON object")


def test_create_reports_a_value_the_action_refuses(key_client: ContractClient, host: Host) -> None:
    response = key_client.post(CAPSULES, {"vcpus": 999}, format="json")
    assert response.status_code == 400
    assert response.json() == error(
        "invalid_request", f"vcpus must be between 1 and {validation.max_vcpus()}, got 999"
    )


def test_create_reports_a_reserved_metadata_key(key_client: ContractClient, host: Host) -> None:
    response = key_client.post(CAPSULES, {"metadata": {"agent_version": "9"}}, format="json")
    assert response.status_code == 400
    assert response.json() == error(
        "invalid_request", "metadata key 'agent_version' is reserved for the system"
    )


def test_create_without_a_host_is_host_unavailable(key_client: ContractClient) -> None:
    response = key_client.post(CAPSULES, {}, format="json")
    assert response.status_code == 503
    assert response.json() == error("host_unavailable", actions.NO_CAPACITY)


def test_create_on_an_agent_that_does_not_answer(key_client: ContractClient, team: Team) -> None:
    Host.objects.create(address=f"127.0.0.1:{free_port()}")
    response = key_client.post(CAPSULES, {}, format="json")
    assert response.status_code == 503
    assert response.json() == error("host_unavailable", actions.HOST_UNREACHABLE)
    assert Sandbox.objects.get(team=team).status == Status.ERROR


def test_create_with_a_network_policy(key_client: ContractClient, host: Host) -> None:
    network = {"allow_internet": False, "allow_out": ["10.9.0.0/16", "2001:DB8::/32"]}
    response = key_client.post(CAPSULES, {"network": network}, format="json")
    assert response.status_code == 201
    expected = {"allow_internet": False, "allow_out": ["10.9.0.0/16", "2001:db8::/32"], "deny_out": []}
    assert response.json()["network"] == expected
    sandbox = Sandbox.objects.get(pk=response.json()["id"])
    assert (sandbox.status, sandbox.network) == (Status.RUNNING, expected)
    assert sandbox.id in agent_sandboxes(host)


def test_create_without_a_policy_has_the_default_one(key_client: ContractClient, host: Host) -> None:
    for body in ({}, {"network": None}):
        assert key_client.post(CAPSULES, body, format="json").json()["network"] == DEFAULT_NETWORK


@pytest.mark.parametrize(
    ("network", "message"),
    [
        (["10.0.0.0/8"], "network: must be an object"),
        ({"allow_internet": "yes"}, "network.allow_internet must be true or false, not str"),
        (
            {"deny": ["10.0.0.0/8"]},
            "network has unknown key 'deny'; its keys are allow_internet, allow_out and deny_out",
        ),
        (
            {"deny_out": ["10.0.0.0/8", "10.0.0.0/40"]},
            "network.deny_out[1] '10.0.0.0/40' is not a CIDR: "
            "the prefix length of an IPv4 network is 0 to 32",
        ),
        (
            {"allow_out": ["127.0.0.1"]},
            "network.allow_out[0] '127.0.0.1' overlaps 127.0.0.0/8 (loopback), "
            "which no capsule may be allowed to reach",
        ),
    ],
)
def test_create_rejects_a_bad_network_policy(
    key_client: ContractClient, host: Host, network: Any, message: str
) -> None:
    response = key_client.post(CAPSULES, {"network": network}, format="json")
    assert response.status_code == 400
    assert response.json() == error("invalid_request", message)
    assert not Sandbox.objects.exists()


# List


def test_list_answers_the_teams_capsules(team_client: ContractClient, capsule: Sandbox) -> None:
    response = team_client.get(CAPSULES)
    assert response.status_code == 200
    assert response.json() == [capsule_json(capsule)]


def test_list_is_newest_first(key_client: ContractClient, team: Team, host: Host) -> None:
    older, newer = make_row(team, host), make_row(team, host)
    Sandbox.objects.filter(pk=older.pk).update(created_at=LONG_AGO)
    assert [c["id"] for c in key_client.get(CAPSULES).json()] == [newer.id, older.id]


def test_list_leaves_out_other_teams(
    key_client: ContractClient, capsule: Sandbox, other_capsule: Sandbox
) -> None:
    assert [c["id"] for c in key_client.get(CAPSULES).json()] == [capsule.id]


def test_list_includes_stopped_capsules(key_client: ContractClient, team: Team, host: Host) -> None:
    stopped = make_row(team, host, Status.STOPPED)
    assert key_client.get(CAPSULES).json() == [capsule_json(stopped)]


def test_list_of_a_team_without_capsules(key_client: ContractClient, other_capsule: Sandbox) -> None:
    assert key_client.get(CAPSULES).json() == []


# Get


def test_get_answers_the_capsule(team_client: ContractClient, capsule: Sandbox) -> None:
    response = team_client.get(url(capsule))
    assert response.status_code == 200
    assert response.json() == capsule_json(capsule)


def test_get_counts_as_activity(key_client: ContractClient, capsule: Sandbox) -> None:
    Sandbox.objects.filter(pk=capsule.pk).update(last_active_at=LONG_AGO)
    body = key_client.get(url(capsule)).json()
    capsule.refresh_from_db()
    assert capsule.last_active_at is not None
    assert capsule.last_active_at > LONG_AGO
    assert body["last_active_at"] == iso(capsule.last_active_at)


def test_get_shows_oom_kills_and_the_isolation_the_host_reported(
    key_client: ContractClient, capsule: Sandbox, host: Host
) -> None:
    isolation = {
        "network": {"on": True, "reason": ""},
        "limits": {"on": False, "reason": "no writable cgroup hierarchy"},
        "seccomp": {"on": True, "reason": ""},
    }
    reported = {"id": capsule.id, "state": "running", "oom_kills": 2}
    hosts.record_heartbeat(host, {"sandboxes": [reported], "isolation": isolation})
    body = key_client.get(url(capsule)).json()
    assert body["isolation"] == isolation
    [event] = body["events"]
    assert (event["kind"], event["message"]) == (
        "oom_kill",
        "the out-of-memory killer ended 2 processes (memory limit 512 MiB)",
    )
    assert event["at"].endswith("Z")
    assert body == capsule_json(capsule)


def test_isolation_is_null_until_the_host_reports_it(key_client: ContractClient, capsule: Sandbox) -> None:
    assert key_client.get(url(capsule)).json()["isolation"] is None


def test_isolation_of_a_capsule_without_a_host_is_null(key_client: ContractClient, team: Team) -> None:
    hostless = make_row(team, None, Status.STOPPED)
    body = key_client.get(url(hostless)).json()
    assert (body["isolation"], body["events"]) == (None, [])


def test_get_a_stopped_capsule(key_client: ContractClient, team: Team, host: Host) -> None:
    stopped = make_row(team, host, Status.STOPPED)
    response = key_client.get(url(stopped))
    assert response.status_code == 200
    assert response.json()["status"] == "stopped"


def test_get_a_missing_capsule(key_client: ContractClient) -> None:
    response = key_client.get(f"{CAPSULES}/cl-00000000000000000000")
    assert response.status_code == 404
    assert response.json() == not_found("cl-00000000000000000000")


def test_get_under_the_api_prefix(key_client: ContractClient, capsule: Sandbox) -> None:
    assert key_client.get("/api" + url(capsule)).json() == capsule_json(capsule)


# Destroy


def test_destroy_answers_204(team_client: ContractClient, capsule: Sandbox) -> None:
    response = team_client.delete(url(capsule))
    assert response.status_code == 204
    assert response.content == b""


def test_destroy_removes_it_from_the_agent_and_keeps_it_listed(
    key_client: ContractClient, capsule: Sandbox, host: Host
) -> None:
    key_client.delete(url(capsule))
    assert capsule.id not in agent_sandboxes(host)
    assert key_client.get(url(capsule)).json()["status"] == "stopped"


def test_destroy_a_stopped_capsule_is_invalid_state(
    key_client: ContractClient, team: Team, host: Host
) -> None:
    stopped = make_row(team, host, Status.STOPPED)
    response = key_client.delete(url(stopped))
    assert response.status_code == 409
    assert response.json() == error("invalid_state", "capsule is stopped; cannot destroy")


def test_destroy_on_an_unreachable_host(key_client: ContractClient, capsule: Sandbox, host: Host) -> None:
    Host.objects.filter(pk=host.pk).update(status=Host.Status.UNREACHABLE)
    response = key_client.delete(url(capsule))
    assert response.status_code == 503
    assert response.json() == error("host_unavailable", actions.HOST_UNREACHABLE)
    Host.objects.filter(pk=host.pk).update(status=Host.Status.ONLINE)


# Pause, resume, ping


def test_pause_answers_the_paused_capsule(team_client: ContractClient, capsule: Sandbox) -> None:
    response = team_client.post(url(capsule, "pause"))
    assert response.status_code == 200
    assert response.json() == capsule_json(capsule)
    assert response.json()["status"] == "paused"


def test_pause_a_paused_capsule_is_invalid_state(key_client: ContractClient, capsule: Sandbox) -> None:
    key_client.post(url(capsule, "pause"))
    response = key_client.post(url(capsule, "pause"))
    assert response.status_code == 409
    assert response.json() == error("invalid_state", "capsule is paused; cannot pause")


def test_pause_a_capsule_the_agent_does_not_have(key_client: ContractClient, team: Team, host: Host) -> None:
    ghost = make_row(team, host)
    response = key_client.post(url(ghost, "pause"))
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "agent_error"
    assert response.json()["error"]["message"].startswith(
        "the host agent could not pause the capsule (NOT_FOUND"
    )
    assert Sandbox.objects.get(pk=ghost.pk).status == Status.RUNNING


def test_pause_on_an_unreachable_host(key_client: ContractClient, capsule: Sandbox, host: Host) -> None:
    Host.objects.filter(pk=host.pk).update(status=Host.Status.UNREACHABLE)
    response = key_client.post(url(capsule, "pause"))
    assert response.status_code == 503
    assert response.json() == error("host_unavailable", actions.HOST_UNREACHABLE)
    Host.objects.filter(pk=host.pk).update(status=Host.Status.ONLINE)


def test_resume_answers_the_running_capsule(team_client: ContractClient, capsule: Sandbox) -> None:
    team_client.post(url(capsule, "pause"))
    response = team_client.post(url(capsule, "resume"))
    assert response.status_code == 200
    assert response.json() == capsule_json(capsule)
    assert response.json()["status"] == "running"


def test_resume_a_running_capsule_is_invalid_state(key_client: ContractClient, capsule: Sandbox) -> None:
    response = key_client.post(url(capsule, "resume"))
    assert response.status_code == 409
    assert response.json() == error("invalid_state", "capsule is running; cannot resume")


def test_ping_answers_the_capsule_and_counts_as_activity(
    team_client: ContractClient, capsule: Sandbox
) -> None:
    Sandbox.objects.filter(pk=capsule.pk).update(last_active_at=LONG_AGO)
    response = team_client.post(url(capsule, "ping"))
    assert response.status_code == 200
    assert response.json() == capsule_json(capsule)
    assert capsule.last_active_at is not None
    assert capsule.last_active_at > LONG_AGO


def test_ping_a_paused_capsule_is_invalid_state(key_client: ContractClient, capsule: Sandbox) -> None:
    key_client.post(url(capsule, "pause"))
    response = key_client.post(url(capsule, "ping"))
    assert response.status_code == 409
    assert response.json() == error("invalid_state", "capsule is paused; cannot ping")


def test_a_body_on_pause_is_ignored(key_client: ContractClient, capsule: Sandbox) -> None:
    assert key_client.post(url(capsule, "pause"), {"anything": 1}, format="json").status_code == 200


# The network policy of an existing capsule. A change that the agent applies is tested in
# tests/capsules/test_network_actions.py until the host agent has SetNetworkPolicy (issue 10).


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "network must be an object with allow_internet, allow_out and deny_out, not list"),
        ({"allow_internet": 0}, "network.allow_internet must be true or false, not int"),
        (
            {"allow_out": [], "extra": 1},
            "network has unknown key 'extra'; its keys are allow_internet, allow_out and deny_out",
        ),
        (
            {"deny_out": ["192.0.2.1/24"]},
            "network.deny_out[0] '192.0.2.1/24' has host bits set: write '192.0.2.0/24' for the network, "
            "or '192.0.2.1/32' for the one address",
        ),
        (
            {"allow_out": ["fd00::/8", "::ffff:169.254.169.254"]},
            "network.allow_out[1] '::ffff:169.254.169.254' is an IPv4-mapped IPv6 network; "
            "write it as IPv4: '169.254.169.254/32'",
        ),
        (
            {"deny_out": ["198.51.100.0/24"] * 65},
            "network.deny_out has 65 entries; at most 64 are allowed",
        ),
    ],
)
def test_change_network_rejects_a_bad_policy(
    key_client: ContractClient, capsule: Sandbox, body: Any, message: str
) -> None:
    response = key_client.put(url(capsule, "network"), body, format="json")
    assert response.status_code == 400
    assert response.json() == error("invalid_request", message)
    capsule.refresh_from_db()
    assert capsule.network == DEFAULT_NETWORK


def test_change_network_of_a_stopped_capsule_is_invalid_state(
    key_client: ContractClient, team: Team, host: Host
) -> None:
    stopped = make_row(team, host, Status.STOPPED)
    response = key_client.put(url(stopped, "network"), {"allow_internet": False}, format="json")
    assert response.status_code == 409
    assert response.json() == error("invalid_state", "capsule is stopped; cannot change its network policy")


def test_change_network_on_an_unreachable_host(
    key_client: ContractClient, capsule: Sandbox, host: Host
) -> None:
    Host.objects.filter(pk=host.pk).update(status=Host.Status.UNREACHABLE)
    response = key_client.put(url(capsule, "network"), {"allow_internet": False}, format="json")
    assert response.status_code == 503
    assert response.json() == error("host_unavailable", actions.HOST_UNREACHABLE)
    capsule.refresh_from_db()
    assert capsule.network == DEFAULT_NETWORK


def test_change_network_needs_json(key_client: ContractClient, capsule: Sandbox) -> None:
    response = key_client.put(url(capsule, "network"), "allow_internet=false", content_type="text/plain")
    assert response.status_code == 415


# Team isolation: another team's capsule answers exactly like a missing one, and is left alone.

CALLS = [
    ("get", ""),
    ("delete", ""),
    ("post", "pause"),
    ("post", "resume"),
    ("post", "ping"),
    ("put", "network"),
]


@pytest.mark.parametrize(("method", "action"), CALLS)
def test_another_teams_capsule_is_not_found(
    team_client: ContractClient, other_capsule: Sandbox, method: str, action: str
) -> None:
    Sandbox.objects.filter(pk=other_capsule.pk).update(last_active_at=LONG_AGO)
    response = getattr(team_client, method)(url(other_capsule, action))
    assert response.status_code == 404
    assert response.json() == not_found(other_capsule.id)
    other_capsule.refresh_from_db()
    assert (other_capsule.status, other_capsule.last_active_at) == (Status.RUNNING, LONG_AGO)
    assert other_capsule.network == DEFAULT_NETWORK


@pytest.mark.parametrize(("method", "action"), CALLS)
def test_a_missing_capsule_is_not_found(
    key_client: ContractClient, db: None, method: str, action: str
) -> None:
    response = getattr(key_client, method)(f"{CAPSULES}/cl-missing" + (f"/{action}" if action else ""))
    assert response.status_code == 404
    assert response.json() == not_found("cl-missing")
