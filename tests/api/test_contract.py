"""Every documented answer of every operation, produced for real and checked against the document.

Each test drives one operation through each status its document lists, with a
client that validates every response against the schema of its path, method and
status, and then checks that no documented status was left out. A few statuses
only a race or a crash produces are provoked by patching; each says so.
"""

from collections.abc import Iterator
from typing import Any

import pytest

from capsules import actions
from capsules.actions import ActionError
from capsules.hosts import issue_host_token
from capsules.keys import create_api_key
from capsules.models import APIKey, Host, Membership, Sandbox, Team
from capsules.tokens import tokens_for
from tests.api.contract import Contract, ContractClient
from tests.capsules import MEMBER_PASSWORD
from tests.support.hostagent import HostAgentProcess, start_hostagent

Status = Sandbox.Status


@pytest.fixture(scope="module")
def guarded_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostAgentProcess]:
    """A real agent that wants a token the control plane does not send: it refuses every call."""
    process = start_hostagent(tmp_path_factory.mktemp("guarded"), token="not-the-control-planes")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def tour(openapi: dict[str, Any]) -> Contract:
    """A contract of its own, so that what a test saw is all this test's."""
    return Contract(openapi)


@pytest.fixture
def anonymous(tour: Contract) -> ContractClient:
    return ContractClient(tour)


@pytest.fixture
def keyed(tour: Contract, api_key: str) -> ContractClient:
    return ContractClient(tour, HTTP_X_API_KEY=api_key)


@pytest.fixture
def observer(tour: Contract, team: Team) -> ContractClient:
    """An API key of the team that may only observe: refused (403) all but reading capsules."""
    _, raw_key = create_api_key(team, "watcher", scope=APIKey.Scope.TERMINAL_OBSERVE)
    return ContractClient(tour, HTTP_X_API_KEY=raw_key)


@pytest.fixture
def signed_in(tour: Contract, member: Any, team: Team) -> ContractClient:
    return ContractClient(tour, HTTP_AUTHORIZATION=f"Bearer {tokens_for(member, team)['access']}")


@pytest.fixture
def crash(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make every DRF view fail unexpectedly inside its request handling."""

    def crash() -> None:
        def explode(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr("rest_framework.views.APIView.initial", explode)

    return crash


def covered(tour: Contract, template: str, method: str) -> None:
    assert tour.seen_statuses(template, method) == tour.statuses(template, method)


def refused_by(monkeypatch: pytest.MonkeyPatch, name: str, code: str) -> None:
    """Stand-in for a race the test cannot stage: the action refuses with `code`."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ActionError(code, f"{name} refused")

    monkeypatch.setattr(f"capsules.actions.{name}", refuse)


def unreachable(host: Host) -> None:
    Host.objects.filter(pk=host.pk).update(status=Host.Status.UNREACHABLE)


def row(team: Team, host: Host, status: str = Status.RUNNING) -> Sandbox:
    """A capsule in the database only; the agent has never heard of it."""
    return Sandbox.objects.create(team=team, host=host, status=status)


# Authentication endpoints


@pytest.mark.parametrize("path", ["/v1/auth/token", "/v1/auth/login"])
def test_sign_in(
    tour: Contract,
    anonymous: ContractClient,
    member: Any,
    other_team: Team,
    crash: Any,
    path: str,
    settings: Any,
) -> None:
    settings.WRENN_LOGIN_RATE = "3/hour"
    who = {"username": "alice"} if path.endswith("token") else {"email": "alice@example.com"}
    assert anonymous.post(path, {**who, "password": MEMBER_PASSWORD}, format="json").status_code == 200
    assert anonymous.post(path, {}, format="json").status_code == 400
    assert anonymous.post(path, {**who, "password": "wrong"}, format="json").status_code == 401
    Membership.objects.filter(user=member).delete()
    assert anonymous.post(path, {**who, "password": MEMBER_PASSWORD}, format="json").status_code == 403
    # The fourth attempt for the account within the hour.
    assert anonymous.post(path, {**who, "password": MEMBER_PASSWORD}, format="json").status_code == 429
    assert anonymous.post(path, "hello", content_type="text/plain").status_code == 415
    crash()
    assert anonymous.post(path, {}, format="json").status_code == 500
    covered(tour, path, "post")


@pytest.mark.parametrize("path", ["/v1/auth/refresh", "/v1/auth/token/refresh"])
def test_refresh(
    tour: Contract, anonymous: ContractClient, member: Any, team: Team, crash: Any, path: str, settings: Any
) -> None:
    settings.WRENN_TOKEN_REFRESH_RATE = "3/hour"
    refresh = tokens_for(member, team)["refresh"]
    assert anonymous.post(path, {"refresh": refresh}, format="json").status_code == 200
    assert anonymous.post(path, {}, format="json").status_code == 400
    assert anonymous.post(path, {"refresh": "garbage"}, format="json").status_code == 401
    Membership.objects.filter(user=member).delete()
    assert anonymous.post(path, {"refresh": refresh}, format="json").status_code == 403
    # The fourth refresh from this address within the hour.
    assert anonymous.post(path, {"refresh": refresh}, format="json").status_code == 429
    assert anonymous.post(path, "hello", content_type="text/plain").status_code == 415
    crash()
    assert anonymous.post(path, {}, format="json").status_code == 500
    covered(tour, path, "post")


def test_switch_team(
    tour: Contract,
    anonymous: ContractClient,
    keyed: ContractClient,
    signed_in: ContractClient,
    member: Any,
    other_team: Team,
    crash: Any,
) -> None:
    path, body = "/v1/auth/switch-team", {"team_id": str(other_team.id)}
    assert signed_in.post(path, body, format="json").status_code == 403
    assert keyed.post(path, body, format="json").status_code == 403
    Membership.objects.create(user=member, team=other_team)
    assert signed_in.post(path, body, format="json").status_code == 200
    assert signed_in.post(path, {"team_id": "x"}, format="json").status_code == 400
    assert anonymous.post(path, body, format="json").status_code == 401
    assert signed_in.post(path, "hello", content_type="text/plain").status_code == 415
    crash()
    assert signed_in.post(path, body, format="json").status_code == 500
    covered(tour, path, "post")


# Capsules


def test_list_capsules(
    tour: Contract, anonymous: ContractClient, keyed: ContractClient, capsule: Sandbox, crash: Any
) -> None:
    assert keyed.get("/v1/capsules").status_code == 200
    assert anonymous.get("/v1/capsules").status_code == 401
    crash()
    assert keyed.get("/v1/capsules").status_code == 500
    covered(tour, "/v1/capsules", "get")


def test_create_capsule(
    tour: Contract,
    anonymous: ContractClient,
    signed_in: ContractClient,
    team: Team,
    host: Host,
    guarded_agent: HostAgentProcess,
    monkeypatch: pytest.MonkeyPatch,
    crash: Any,
) -> None:
    path = "/v1/capsules"
    created = signed_in.post(path, {"metadata": {"purpose": "contract"}}, format="json")
    assert created.status_code == 201
    actions.destroy_capsule(Sandbox.objects.get(pk=created.json()["id"]))
    assert signed_in.post(path, {"vcpus": "1"}, format="json").status_code == 400
    assert anonymous.post(path, {}, format="json").status_code == 401
    assert signed_in.post(path, "hello", content_type="text/plain").status_code == 415
    Team.objects.filter(pk=team.pk).update(max_capsules=0)
    assert signed_in.post(path, {}, format="json").status_code == 403
    Team.objects.filter(pk=team.pk).update(max_capsules=None)
    unreachable(host)
    assert signed_in.post(path, {}, format="json").status_code == 503
    Host.objects.create(address=guarded_agent.address)
    assert signed_in.post(path, {}, format="json").status_code == 502
    refused_by(monkeypatch, "create_capsule", "conflict")  # destroyed while being created
    assert signed_in.post(path, {}, format="json").status_code == 409
    crash()
    assert signed_in.post(path, {}, format="json").status_code == 500
    covered(tour, path, "post")


def test_get_capsule(
    tour: Contract,
    anonymous: ContractClient,
    keyed: ContractClient,
    capsule: Sandbox,
    other_capsule: Sandbox,
    crash: Any,
) -> None:
    assert keyed.get(f"/v1/capsules/{capsule.id}").status_code == 200
    assert keyed.get(f"/v1/capsules/{other_capsule.id}").status_code == 404
    assert anonymous.get(f"/v1/capsules/{capsule.id}").status_code == 401
    crash()
    assert keyed.get(f"/v1/capsules/{capsule.id}").status_code == 500
    covered(tour, "/v1/capsules/{capsule_id}", "get")


def test_destroy_capsule(
    tour: Contract,
    anonymous: ContractClient,
    keyed: ContractClient,
    observer: ContractClient,
    capsule: Sandbox,
    other_capsule: Sandbox,
    team: Team,
    host: Host,
    guarded_agent: HostAgentProcess,
    crash: Any,
) -> None:
    assert anonymous.delete(f"/v1/capsules/{capsule.id}").status_code == 401
    assert keyed.delete(f"/v1/capsules/{other_capsule.id}").status_code == 404
    assert observer.delete(f"/v1/capsules/{capsule.id}").status_code == 403
    assert keyed.delete(f"/v1/capsules/{capsule.id}").status_code == 204
    assert keyed.delete(f"/v1/capsules/{capsule.id}").status_code == 409
    refused = row(team, Host.objects.create(address=guarded_agent.address))
    assert keyed.delete(f"/v1/capsules/{refused.id}").status_code == 502
    stranded = row(team, host)
    unreachable(host)
    assert keyed.delete(f"/v1/capsules/{stranded.id}").status_code == 503
    crash()
    assert keyed.delete(f"/v1/capsules/{capsule.id}").status_code == 500
    covered(tour, "/v1/capsules/{capsule_id}", "delete")


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_pause_and_resume(
    tour: Contract,
    anonymous: ContractClient,
    keyed: ContractClient,
    observer: ContractClient,
    capsule: Sandbox,
    other_capsule: Sandbox,
    team: Team,
    host: Host,
    crash: Any,
    action: str,
) -> None:
    before, after = (Status.RUNNING, Status.PAUSED) if action == "pause" else (Status.PAUSED, Status.RUNNING)
    if action == "resume":
        actions.pause_capsule(capsule)
    assert observer.post(f"/v1/capsules/{capsule.id}/{action}").status_code == 403
    assert keyed.post(f"/v1/capsules/{capsule.id}/{action}").status_code == 200
    assert keyed.post(f"/v1/capsules/{capsule.id}/{action}").status_code == 409
    assert keyed.post(f"/v1/capsules/{other_capsule.id}/{action}").status_code == 404
    assert anonymous.post(f"/v1/capsules/{capsule.id}/{action}").status_code == 401
    ghost = row(team, host, before)
    assert keyed.post(f"/v1/capsules/{ghost.id}/{action}").status_code == 502
    Sandbox.objects.filter(pk=capsule.pk).update(status=before)
    unreachable(host)
    assert keyed.post(f"/v1/capsules/{capsule.id}/{action}").status_code == 503
    Host.objects.filter(pk=host.pk).update(status=Host.Status.ONLINE)
    Sandbox.objects.filter(pk=capsule.pk).update(status=after)
    crash()
    assert keyed.post(f"/v1/capsules/{capsule.id}/{action}").status_code == 500
    covered(tour, f"/v1/capsules/{{capsule_id}}/{action}", "post")


def test_ping(
    tour: Contract,
    anonymous: ContractClient,
    keyed: ContractClient,
    observer: ContractClient,
    capsule: Sandbox,
    other_capsule: Sandbox,
    team: Team,
    host: Host,
    crash: Any,
) -> None:
    assert keyed.post(f"/v1/capsules/{capsule.id}/ping").status_code == 200
    assert observer.post(f"/v1/capsules/{capsule.id}/ping").status_code == 403
    assert keyed.post(f"/v1/capsules/{row(team, host, Status.PAUSED).id}/ping").status_code == 409
    assert keyed.post(f"/v1/capsules/{other_capsule.id}/ping").status_code == 404
    assert anonymous.post(f"/v1/capsules/{capsule.id}/ping").status_code == 401
    crash()
    assert keyed.post(f"/v1/capsules/{capsule.id}/ping").status_code == 500
    covered(tour, "/v1/capsules/{capsule_id}/ping", "post")


def test_change_network_policy(
    tour: Contract,
    anonymous: ContractClient,
    keyed: ContractClient,
    observer: ContractClient,
    capsule: Sandbox,
    other_capsule: Sandbox,
    team: Team,
    host: Host,
    guarded_agent: HostAgentProcess,
    crash: Any,
) -> None:
    template = "/v1/capsules/{capsule_id}/network"
    path = f"/v1/capsules/{capsule.id}/network"
    assert keyed.put(path, {"allow_internet": False}, format="json").status_code == 200
    assert observer.put(path, {"allow_internet": True}, format="json").status_code == 403
    assert keyed.put(path, {"allow_out": ["nowhere"]}, format="json").status_code == 400
    assert keyed.put(path, "allow_internet", content_type="text/plain").status_code == 415
    assert anonymous.put(path, {}, format="json").status_code == 401
    assert keyed.put(f"/v1/capsules/{other_capsule.id}/network", {}, format="json").status_code == 404
    stopped = row(team, host, Status.STOPPED)
    assert keyed.put(f"/v1/capsules/{stopped.id}/network", {}, format="json").status_code == 409
    refused = row(team, Host.objects.create(address=guarded_agent.address))
    assert keyed.put(f"/v1/capsules/{refused.id}/network", {}, format="json").status_code == 502
    unreachable(host)
    assert keyed.put(path, {}, format="json").status_code == 503
    crash()
    assert keyed.put(path, {}, format="json").status_code == 500
    assert tour.seen_statuses(template, "put") == tour.statuses(template, "put")


# API keys


def test_list_and_create_api_keys(
    tour: Contract, anonymous: ContractClient, signed_in: ContractClient, observer: ContractClient, crash: Any
) -> None:
    path = "/v1/api-keys"
    assert signed_in.post(path, {"name": "contract"}, format="json").status_code == 201
    assert signed_in.get(path).status_code == 200
    assert observer.get(path).status_code == 403
    assert observer.post(path, {"name": "escalate"}, format="json").status_code == 403
    assert signed_in.post(path, {"name": ""}, format="json").status_code == 400
    assert signed_in.post(path, "hello", content_type="text/plain").status_code == 415
    assert anonymous.get(path).status_code == 401
    assert anonymous.post(path, {"name": "x"}, format="json").status_code == 401
    crash()
    assert signed_in.get(path).status_code == 500
    assert signed_in.post(path, {"name": "x"}, format="json").status_code == 500
    covered(tour, path, "get")
    covered(tour, path, "post")


def test_revoke_api_key(
    tour: Contract,
    anonymous: ContractClient,
    keyed: ContractClient,
    observer: ContractClient,
    team: Team,
    other_team: Team,
    crash: Any,
) -> None:
    mine, _ = create_api_key(team, "mine")
    theirs, _ = create_api_key(other_team, "theirs")
    assert keyed.delete(f"/v1/api-keys/{mine.pk}").status_code == 204
    assert keyed.delete(f"/v1/api-keys/{theirs.pk}").status_code == 404
    assert observer.delete(f"/v1/api-keys/{mine.pk}").status_code == 403
    assert anonymous.delete(f"/v1/api-keys/{mine.pk}").status_code == 401
    crash()
    assert keyed.delete(f"/v1/api-keys/{mine.pk}").status_code == 500
    covered(tour, "/v1/api-keys/{key_id}", "delete")


# Hosts


def test_heartbeat(tour: Contract, anonymous: ContractClient, host: Host, crash: Any) -> None:
    path = "/v1/hosts/heartbeat"
    token = f"Bearer {issue_host_token(host)}"
    beat = {"runtime": "process", "capacity": {"vcpus": 2, "memory_mb": 2048}, "sandboxes": []}
    assert anonymous.post(path, beat, format="json", HTTP_AUTHORIZATION=token).status_code == 200
    assert anonymous.post(path, {"sandboxes": 5}, format="json", HTTP_AUTHORIZATION=token).status_code == 400
    assert anonymous.post(path, beat, format="json").status_code == 401
    crash()
    assert anonymous.post(path, beat, format="json", HTTP_AUTHORIZATION=token).status_code == 500
    covered(tour, path, "post")


# Exec and processes


def test_exec(
    tour: Contract,
    anonymous: ContractClient,
    keyed: ContractClient,
    observer: ContractClient,
    capsule: Sandbox,
    other_capsule: Sandbox,
    team: Team,
    host: Host,
    guarded_agent: HostAgentProcess,
    crash: Any,
) -> None:
    path = f"/v1/capsules/{capsule.id}/exec"
    assert keyed.post(path, {"cmd": "true"}, format="json").status_code == 200
    assert (
        keyed.post(path, {"cmd": "sleep", "args": ["1"], "background": True}, format="json").status_code
        == 202
    )
    assert keyed.post(path, {"cmd": ""}, format="json").status_code == 400
    assert observer.post(path, {"cmd": "true"}, format="json").status_code == 403
    assert keyed.post(path, "cmd=true", content_type="text/plain").status_code == 415
    assert anonymous.post(path, {"cmd": "true"}, format="json").status_code == 401
    assert (
        keyed.post(f"/v1/capsules/{other_capsule.id}/exec", {"cmd": "true"}, format="json").status_code == 404
    )
    paused = row(team, host, Status.PAUSED)
    assert keyed.post(f"/v1/capsules/{paused.id}/exec", {"cmd": "true"}, format="json").status_code == 409
    refused = row(team, Host.objects.create(address=guarded_agent.address))
    assert keyed.post(f"/v1/capsules/{refused.id}/exec", {"cmd": "true"}, format="json").status_code == 502
    unreachable(host)
    assert keyed.post(path, {"cmd": "true"}, format="json").status_code == 503
    crash()
    assert keyed.post(path, {"cmd": "true"}, format="json").status_code == 500
    covered(tour, "/v1/capsules/{capsule_id}/exec", "post")


def test_list_and_signal_processes(
    tour: Contract,
    anonymous: ContractClient,
    keyed: ContractClient,
    observer: ContractClient,
    capsule: Sandbox,
    other_capsule: Sandbox,
    team: Team,
    host: Host,
    guarded_agent: HostAgentProcess,
    crash: Any,
) -> None:
    listing = f"/v1/capsules/{capsule.id}/processes"
    started = keyed.post(
        f"/v1/capsules/{capsule.id}/exec", {"cmd": "sleep", "args": ["60"], "background": True}, format="json"
    )
    one = f"{listing}/{started.json()['tag']}"
    assert keyed.get(listing).status_code == 200
    assert keyed.delete(f"{one}?signal=SIGTERM").status_code == 204
    assert keyed.delete(f"{listing}/0042").status_code == 400
    assert observer.get(listing).status_code == 403
    assert observer.delete(one).status_code == 403
    assert keyed.delete(f"{listing}/proc-00000000").status_code == 404
    for request in (anonymous.get, anonymous.delete):
        assert request(listing if request == anonymous.get else one).status_code == 401
    others = f"/v1/capsules/{other_capsule.id}/processes"
    assert keyed.get(others).status_code == 404
    assert keyed.delete(f"{others}/1").status_code == 404
    paused = f"/v1/capsules/{row(team, host, Status.PAUSED).id}/processes"
    assert keyed.get(paused).status_code == 409
    assert keyed.delete(f"{paused}/1").status_code == 409
    refused = f"/v1/capsules/{row(team, Host.objects.create(address=guarded_agent.address)).id}/processes"
    assert keyed.get(refused).status_code == 502
    assert keyed.delete(f"{refused}/1").status_code == 502
    unreachable(host)
    assert keyed.get(listing).status_code == 503
    assert keyed.delete(one).status_code == 503
    crash()
    assert keyed.get(listing).status_code == 500
    assert keyed.delete(one).status_code == 500
    covered(tour, "/v1/capsules/{capsule_id}/processes", "get")
    covered(tour, "/v1/capsules/{capsule_id}/processes/{selector}", "delete")


# The audit trail


def test_audit(
    tour: Contract,
    anonymous: ContractClient,
    keyed: ContractClient,
    observer: ContractClient,
    crash: Any,
) -> None:
    path = "/v1/audit"
    assert keyed.get(path).status_code == 200
    assert keyed.get(f"{path}?outcome=maybe").status_code == 400
    assert anonymous.get(path).status_code == 401
    assert observer.get(path).status_code == 403
    crash()
    assert keyed.get(path).status_code == 500
    covered(tour, path, "get")
