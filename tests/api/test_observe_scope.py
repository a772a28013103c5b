"""An API key of scope `terminal:observe` is read-only: it lists and reads the team's capsules
(and, where routes exist, their terminal sessions), and every other endpoint answers 403 with
the reason. Every operation of the OpenAPI document is tried, so a new endpoint is covered the
day it is documented."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from capsules.api.authentication import OBSERVE_ONLY
from capsules.keys import create_api_key
from capsules.models import APIKey, Host, Sandbox, Team
from previews.access import Denied, authorize
from previews.hosts import PreviewTarget
from tests.api import error
from tests.api.contract import ContractClient

# The only calls an observe key may make: (method, path template).
READS = {("get", "/v1/capsules"), ("get", "/v1/capsules/{capsule_id}")}
# Calls that must be among those refused, so that the sweep below cannot pass by finding nothing.
WRITES = {
    ("post", "/v1/capsules"),
    ("delete", "/v1/capsules/{capsule_id}"),
    ("post", "/v1/capsules/{capsule_id}/pause"),
    ("post", "/v1/capsules/{capsule_id}/resume"),
    ("post", "/v1/capsules/{capsule_id}/ping"),
    ("post", "/v1/capsules/{capsule_id}/exec"),
    ("put", "/v1/capsules/{capsule_id}/network"),
    ("get", "/v1/capsules/{capsule_id}/processes"),
    ("delete", "/v1/capsules/{capsule_id}/processes/{selector}"),
    ("post", "/v1/capsules/{capsule_id}/files/write"),
    ("post", "/v1/capsules/{capsule_id}/files/read"),
    ("post", "/v1/capsules/{capsule_id}/previews"),
    ("put", "/v1/capsules/{capsule_id}/previews/ports/{port}"),
    ("post", "/v1/api-keys"),
    ("delete", "/v1/api-keys/{key_id}"),
    ("get", "/v1/audit"),
    ("get", "/v1/events/stream"),
}
PARAMETER = re.compile(r"\{([^}]+)\}")


@pytest.fixture
def observer_key(team: Team) -> str:
    """The raw key of an API key of the team with the observe scope."""
    _, raw_key = create_api_key(team, "watcher", scope=APIKey.Scope.TERMINAL_OBSERVE)
    return raw_key


@pytest.fixture
def observer(contract: Any, observer_key: str) -> ContractClient:
    return ContractClient(contract, HTTP_X_API_KEY=observer_key)


@pytest.fixture
def row(team: Team) -> Sandbox:
    """A running capsule of the team (a row: no refused call may reach an agent)."""
    host = Host.objects.create(address="127.0.0.1:1")
    return Sandbox.objects.create(
        team=team, host=host, status=Sandbox.Status.RUNNING, started_at=timezone.now()
    )


def operations(openapi: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (method, template) an API key may be sent to."""
    return sorted(
        (method, template)
        for template, item in openapi["paths"].items()
        for method, operation in item.items()
        if {"ApiKeyAuth": []} in operation.get("security", [])
    )


def concrete(template: str, capsule: Sandbox, key_id: int) -> str:
    values = {"capsule_id": capsule.pk, "key_id": str(key_id), "port": "8080", "tag": "pty-0123abcd"}
    return PARAMETER.sub(lambda match: values.get(match.group(1), "1"), template)


def test_it_reads_the_teams_capsules(observer: ContractClient, row: Sandbox) -> None:
    listed = observer.get("/v1/capsules")
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()] == [row.pk]
    one = observer.get(f"/v1/capsules/{row.pk}")
    assert (one.status_code, one.json()["id"]) == (200, row.pk)


def test_it_reads_nothing_of_another_team(observer: ContractClient, other_team: Team) -> None:
    theirs = Sandbox.objects.create(team=other_team, status=Sandbox.Status.STOPPED)
    assert observer.get("/v1/capsules").json() == []
    assert observer.get(f"/v1/capsules/{theirs.pk}").status_code == 404


def test_every_other_operation_answers_403(
    observer: ContractClient, openapi: dict[str, Any], row: Sandbox, team: Team
) -> None:
    full_key, _ = create_api_key(team, "full")
    refused = set()
    for method, template in operations(openapi):
        if (method, template) in READS:
            continue
        path = concrete(template, row, full_key.pk)
        response = getattr(observer, method)(path, {}, format="json")
        assert response.status_code == 403, (method, path, response.content)
        assert response.json() == error("forbidden", OBSERVE_ONLY), (method, path)
        refused.add((method, template))
    assert refused >= WRITES, sorted(WRITES - refused)
    # Nothing was changed on the way.
    row.refresh_from_db()
    assert row.status == Sandbox.Status.RUNNING
    assert APIKey.objects.get(pk=full_key.pk).revoked_at is None
    assert set(APIKey.objects.filter(team=team).values_list("name", flat=True)) == {"watcher", "full"}


def test_the_same_holds_under_the_api_prefix(observer: ContractClient, row: Sandbox) -> None:
    response = observer.post(f"/api/v1/capsules/{row.pk}/pause")
    assert response.status_code == 403
    assert response.json() == error("forbidden", OBSERVE_ONLY)


def test_a_full_key_and_a_person_are_not_limited(team_client: ContractClient, row: Sandbox) -> None:
    assert team_client.get(f"/v1/capsules/{row.pk}/previews").status_code == 200
    assert team_client.get("/v1/audit").status_code == 200


def test_the_event_stream_is_refused(observer_key: str) -> None:
    response = Client().get("/v1/events/stream", HTTP_X_API_KEY=observer_key)
    assert response.status_code == 403
    assert response.json() == error("forbidden", OBSERVE_ONLY)


def test_a_preview_is_refused(row: Sandbox, observer_key: str) -> None:
    request = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "query_string": b"",
        "headers": [(b"x-api-key", observer_key.encode())],
    }
    with pytest.raises(Denied) as denied:
        authorize(request, PreviewTarget(3000, row.pk, f"3000-{row.pk}.localhost:8000"))
    assert (denied.value.status, denied.value.code, denied.value.message) == (403, "forbidden", OBSERVE_ONLY)
