"""Model defaults and identifiers."""

import re

from capsules.models import Host, Membership, Sandbox, Team


def test_capsule_id_is_cl_and_twenty_hex_characters(capsule: Sandbox) -> None:
    assert re.fullmatch(r"cl-[0-9a-f]{20}", capsule.id)


def test_new_capsule_defaults(team: Team) -> None:
    capsule = Sandbox.objects.create(team=team)
    assert (capsule.status, capsule.template, capsule.vcpus, capsule.memory_mb, capsule.timeout_sec) == (
        "pending",
        "minimal",
        1,
        512,
        300,
    )
    assert capsule.metadata == {}


def test_capsule_status_values_match_the_reference() -> None:
    assert Sandbox.Status.values == [
        "pending",
        "starting",
        "running",
        "pausing",
        "paused",
        "resuming",
        "stopping",
        "stopped",
        "missing",
        "error",
    ]


def test_new_host_is_online(host: Host) -> None:
    assert host.status == Host.Status.ONLINE


def test_str_names_the_object(team: Team, member: object, capsule: Sandbox, host: Host) -> None:
    membership = Membership.objects.get(team=team)
    assert str(team) == "Acme (acme)"
    assert str(membership) == "alice in Acme (member)"
    assert str(capsule) == f"{capsule.id} (running)"
    assert str(host) == "127.0.0.1:50071 (online)"
