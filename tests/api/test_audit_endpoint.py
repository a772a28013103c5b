"""`GET /v1/audit`: a team's own events only, newest first, walked page by page with a cursor,
narrowed by checked filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.utils import timezone

from audit import trail
from audit.models import AuditEvent
from capsules.models import Team
from tests.api import error
from tests.api.contract import ContractClient

AUDIT = "/v1/audit"
ALICE = trail.Actor("user", "user:alice", user_id=None)
CI_KEY = trail.Actor("api_key", "key:wrn_ab12cd34")


def event(team: Team, action: str = trail.CAPSULE_CREATE, **kwargs: Any) -> AuditEvent:
    actor = kwargs.pop("actor", ALICE)
    return trail.record(action, actor, team_id=team.pk, **kwargs)


@pytest.fixture
def earlier(key_client: ContractClient, team: Team) -> list[int]:
    """The team's events before the test's own, newest first (making the API key is one)."""
    return list(AuditEvent.objects.filter(team=team).order_by("-pk").values_list("pk", flat=True))


def get(client: ContractClient, **params: Any) -> Any:
    return client.get(f"{AUDIT}?{urlencode(params)}" if params else AUDIT)


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["events"]]


def test_an_event_as_the_api_shows_it(team_client: ContractClient, team: Team) -> None:
    where = trail.Where("198.51.100.4", "https://app.example", worker="web-1:77")
    stored = event(
        team,
        trail.CAPSULE_PAUSE,
        actor=CI_KEY,
        outcome=trail.FAILURE,
        reason="capsule is paused; cannot pause",
        capsule_id="cl-abc",
        where=where,
        detail={"vcpus": 1},
    )
    body = get(team_client, action="capsule.pause").json()
    assert body == {
        "events": [
            {
                "id": stored.pk,
                "at": stored.at.isoformat().replace("+00:00", "Z"),
                "action": "capsule.pause",
                "outcome": "failure",
                "reason": "capsule is paused; cannot pause",
                "actor": {"type": "api_key", "label": "key:wrn_ab12cd34"},
                "capsule_id": "cl-abc",
                "session_tag": None,
                "client_address": "198.51.100.4",
                "origin": "https://app.example",
                "detail": {"vcpus": 1},
            }
        ],
        "next_cursor": None,
    }


def test_another_teams_events_never_appear(
    key_client: ContractClient, team: Team, other_team: Team, earlier: list[int]
) -> None:
    mine = event(team, capsule_id="cl-mine")
    theirs = [
        event(other_team, capsule_id="cl-theirs"),
        event(other_team, trail.AUTH_FAILED, outcome=trail.FAILURE, actor=CI_KEY),
        trail.record(trail.AUTH_FAILED, trail.ANONYMOUS, outcome=trail.FAILURE),  # no team at all
    ]
    assert ids(get(key_client)) == [mine.pk, *earlier]
    for params in (
        {"capsule_id": "cl-theirs"},
        {"actor": "key:wrn_ab12cd34"},
        {"action": "auth.failed"},
        {"outcome": "failure"},
    ):
        assert ids(get(key_client, **params)) == [], params
    # A cursor past their events walks only through the team's own.
    assert ids(get(key_client, cursor=str(max(e.pk for e in theirs) + 1))) == [mine.pk, *earlier]


def test_newest_first(key_client: ContractClient, team: Team, earlier: list[int]) -> None:
    made = [event(team) for _ in range(3)]
    assert ids(get(key_client)) == [e.pk for e in reversed(made)] + earlier


def test_a_walk_through_the_pages_sees_each_event_once_while_new_ones_arrive(
    key_client: ContractClient, team: Team, earlier: list[int]
) -> None:
    before = [event(team) for _ in range(7 - len(earlier))]
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = get(key_client, **params).json()
        seen += [item["id"] for item in body["events"]]
        pages += 1
        event(team)  # written meanwhile: newer than the walk, so never on one of its pages
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 4
    assert seen == [e.pk for e in reversed(before)] + earlier


def test_a_full_last_page_has_no_next_cursor(
    key_client: ContractClient, team: Team, earlier: list[int]
) -> None:
    for _ in range(2):
        event(team)
    assert get(key_client, limit=2 + len(earlier)).json()["next_cursor"] is None
    assert get(key_client, limit=1 + len(earlier)).json()["next_cursor"] is not None


def test_the_default_page_is_fifty(key_client: ContractClient, team: Team, earlier: list[int]) -> None:
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(team=team, action="capsule.create", actor_type="system")
            for _ in range(51 - len(earlier))
        ]
    )
    body = get(key_client).json()
    assert len(body["events"]) == 50
    assert body["next_cursor"] is not None
    assert len(get(key_client, cursor=body["next_cursor"]).json()["events"]) == 1


def test_filters(key_client: ContractClient, team: Team) -> None:
    create = event(team, capsule_id="cl-one")
    failed = event(team, trail.CAPSULE_PAUSE, outcome=trail.FAILURE, capsule_id="cl-one", actor=CI_KEY)
    other = event(team, trail.API_KEY_CREATE, actor=CI_KEY)
    assert ids(get(key_client, action="capsule.pause")) == [failed.pk]
    assert ids(get(key_client, outcome="success", action="capsule.create")) == [create.pk]
    assert ids(get(key_client, outcome="success", actor="key:wrn_ab12cd34")) == [other.pk]
    assert ids(get(key_client, capsule_id="cl-one")) == [failed.pk, create.pk]
    assert ids(get(key_client, actor="key:wrn_ab12cd34")) == [other.pk, failed.pk]
    assert ids(get(key_client, actor="key:wrn_ab12cd34", capsule_id="cl-one")) == [failed.pk]


def test_since_and_until(key_client: ContractClient, team: Team, earlier: list[int]) -> None:
    now = timezone.now()
    old = AuditEvent.objects.create(
        team=team, action="capsule.create", actor_type="system", at=now - timedelta(days=2)
    )
    new = event(team)
    yesterday = (now - timedelta(days=1)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert ids(get(key_client, since=yesterday)) == [new.pk, *earlier]
    assert ids(get(key_client, until=yesterday)) == [old.pk]
    offset = (now - timedelta(days=1)).astimezone(timezone.get_fixed_timezone(120)).isoformat()
    assert ids(get(key_client, since=offset)) == [new.pk, *earlier]
    soon = (now + timedelta(minutes=1)).isoformat()
    assert ids(get(key_client, since=yesterday, until=soon)) == [new.pk, *earlier]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"action": "capsule.explode"},
            "action must be one of " + ", ".join(trail.ACTIONS) + "; got 'capsule.explode'",
        ),
        ({"action": ""}, "action must be one of " + ", ".join(trail.ACTIONS) + "; got ''"),
        ({"outcome": "maybe"}, "outcome must be one of success, failure; got 'maybe'"),
        ({"capsule_id": ""}, "capsule_id must be a capsule id of 1 to 32 characters"),
        ({"capsule_id": "c" * 33}, "capsule_id must be a capsule id of 1 to 32 characters"),
        (
            {"actor": ""},
            "actor must be an actor's label (such as user:alice or key:wrn_ab12cd34) of 1 to 200 characters",
        ),
        (
            {"since": "yesterday"},
            "since must be an ISO 8601 date and time such as 2026-12-04T20:30:00Z; got 'yesterday'",
        ),
        (
            {"until": "2026-12-04T20:30:00"},
            "until must name its time zone (Z or an offset such as +02:00); got '2026-12-04T20:30:00'",
        ),
        (
            {"since": "2026-12-05T00:00:00Z", "until": "2026-12-04T00:00:00Z"},
            "since must not be after until",
        ),
        ({"limit": "0"}, "limit must be a whole number from 1 to 200; got '0'"),
        ({"limit": "201"}, "limit must be a whole number from 1 to 200; got '201'"),
        ({"limit": "ten"}, "limit must be a whole number from 1 to 200; got 'ten'"),
        ({"cursor": "abc"}, "cursor must be the next_cursor of a previous page, unchanged"),
        ({"cursor": "-5"}, "cursor must be the next_cursor of a previous page, unchanged"),
        (
            {"team": "x"},
            "unknown query parameter 'team': "
            "use action, outcome, capsule_id, actor, since, until, cursor, limit",
        ),
    ],
)
def test_a_bad_parameter_answers_400_naming_it(
    key_client: ContractClient, team: Team, params: dict[str, str], message: str
) -> None:
    response = get(key_client, **params)
    assert response.status_code == 400
    assert response.json() == error("invalid_request", message)


def test_needs_credentials(client: ContractClient, db: None) -> None:
    assert client.get(AUDIT).status_code == 401


def test_the_serving_worker_stays_private(key_client: ContractClient, team: Team) -> None:
    event(team, where=trail.Where("192.0.2.1", worker="internal-host-7:1234"))
    assert "internal-host-7" not in get(key_client).content.decode()


def test_the_api_prefix_serves_it_too(key_client: ContractClient, team: Team, earlier: list[int]) -> None:
    made = event(team)
    assert ids(key_client.get("/api/v1/audit")) == [made.pk, *earlier]


def test_times_are_utc(key_client: ContractClient, team: Team) -> None:
    AuditEvent.objects.create(
        team=team, action="quota.refused", actor_type="system", at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    )
    assert get(key_client, action="quota.refused").json()["events"][0]["at"] == "2026-01-02T03:04:05Z"


def test_a_cursor_past_every_id_is_harmless(
    key_client: ContractClient, team: Team, earlier: list[int]
) -> None:
    made = event(team)
    assert ids(get(key_client, cursor="9" * 19)) == [made.pk, *earlier]
    assert ids(get(key_client, cursor="1")) == []
