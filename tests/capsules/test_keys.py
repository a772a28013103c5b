"""API keys: created once, stored as a hash, authenticated until revoked."""

from datetime import timedelta

from django.utils import timezone

from capsules.keys import authenticate_api_key, create_api_key, hash_key
from capsules.models import APIKey, Team


def test_created_key_has_wrn_prefix_and_forty_hex_characters(team: Team) -> None:
    _, raw_key = create_api_key(team, "ci")
    assert raw_key.startswith("wrn_")
    assert len(raw_key) == 44
    int(raw_key[4:], 16)


def test_creation_stores_only_the_hash_and_prefix(team: Team) -> None:
    row, raw_key = create_api_key(team, "ci")
    stored = APIKey.objects.get(pk=row.pk)
    assert stored.key_hash == hash_key(raw_key)
    assert stored.prefix == raw_key[:12]
    assert raw_key not in {str(value) for value in APIKey.objects.values_list().get(pk=row.pk)}


def test_authenticate_returns_the_key_with_its_team(team: Team, api_key: str) -> None:
    found = authenticate_api_key(api_key)
    assert found is not None
    assert found.team == team


def test_authenticate_rejects_an_unknown_key(api_key: str) -> None:
    assert authenticate_api_key("wrn_" + "0" * 40) is None


def test_authenticate_rejects_a_malformed_key(api_key: str) -> None:
    assert authenticate_api_key(api_key + "x") is None
    assert authenticate_api_key(api_key.upper()) is None
    assert authenticate_api_key("") is None


def test_authenticate_rejects_a_revoked_key(api_key: str) -> None:
    APIKey.objects.update(revoked_at=timezone.now())
    assert authenticate_api_key(api_key) is None


def test_authenticate_records_last_used(api_key: str) -> None:
    before = timezone.now()
    authenticate_api_key(api_key)
    last_used = APIKey.objects.get().last_used
    assert last_used is not None
    assert last_used >= before


def test_last_used_is_written_at_most_once_a_minute(api_key: str) -> None:
    recent = timezone.now() - timedelta(seconds=10)
    APIKey.objects.update(last_used=recent)
    authenticate_api_key(api_key)
    assert APIKey.objects.get().last_used == recent


def test_last_used_older_than_a_minute_is_refreshed(api_key: str) -> None:
    stale = timezone.now() - timedelta(minutes=5)
    APIKey.objects.update(last_used=stale)
    authenticate_api_key(api_key)
    last_used = APIKey.objects.get().last_used
    assert last_used is not None
    assert last_used > stale
