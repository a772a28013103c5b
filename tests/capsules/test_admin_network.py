"""The admin and issue 10: a capsule's network policy, set at creation and changed through the same
action as the API (refusals as errors on the field), its events read-only, and hosts' isolation.

A change that the agent applies needs an agent with SetNetworkPolicy; until the host agent has it,
tests/capsules/test_network_actions.py tests that path against a stand-in server.
"""

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from capsules.actions import ActionError, destroy_capsule
from capsules.events import new_event
from capsules.models import Host, Sandbox, Team

Status = Sandbox.Status
DEFAULT = {"allow_internet": True, "allow_out": [], "deny_out": []}
POLICY = {"allow_internet": False, "allow_out": ["10.4.0.0/16"], "deny_out": []}


@pytest.fixture
def stranded_capsule(team: Team, dead_host: Host) -> Sandbox:
    """A running capsule whose host agent does not answer."""
    return Sandbox.objects.create(team=team, host=dead_host, status=Status.RUNNING)


def change(client: Client, capsule: Sandbox, network: Any, timeout_sec: int = 300) -> Any:
    return client.post(
        reverse("admin:capsules_sandbox_change", args=[capsule.pk]),
        {"timeout_sec": str(timeout_sec), "metadata": "{}", "network": json.dumps(network)},
    )


def network_errors(response: Any) -> list[str]:
    assert response.status_code == 200, response
    return list(response.context["adminform"].form.errors.get("network", []))


def row(capsule: Sandbox) -> Sandbox:
    return Sandbox.objects.get(pk=capsule.pk)


# Changing the policy


def test_the_policy_is_an_editable_field(admin_client: Client, capsule: Sandbox) -> None:
    page = admin_client.get(reverse("admin:capsules_sandbox_change", args=[capsule.pk]))
    form = page.context["adminform"].form
    assert "network" in form.fields
    assert json.loads(form["network"].value()) == DEFAULT


def test_a_bad_policy_is_an_error_on_the_field(admin_client: Client, stranded_capsule: Sandbox) -> None:
    response = change(admin_client, stranded_capsule, {"deny_out": ["10.0.0.0/33"]}, timeout_sec=600)
    assert network_errors(response) == [
        "network.deny_out[0] '10.0.0.0/33' is not a CIDR: the prefix length of an IPv4 network is 0 to 32"
    ]
    assert (row(stranded_capsule).network, row(stranded_capsule).timeout_sec) == (DEFAULT, 300)


def test_the_admin_cannot_open_the_host_either(admin_client: Client, stranded_capsule: Sandbox) -> None:
    response = change(admin_client, stranded_capsule, {"allow_out": ["0.0.0.0/0"]})
    assert network_errors(response) == [
        "network.allow_out[0] '0.0.0.0/0' overlaps 127.0.0.0/8 (loopback), "
        "which no capsule may be allowed to reach"
    ]


def test_a_change_the_host_cannot_take_is_not_saved(admin_client: Client, stranded_capsule: Sandbox) -> None:
    response = change(admin_client, stranded_capsule, POLICY, timeout_sec=600)
    assert network_errors(response) == ["not applied: sandbox host is not reachable"]
    assert (row(stranded_capsule).network, row(stranded_capsule).timeout_sec) == (DEFAULT, 300)


def test_a_stopped_capsule_has_no_policy_to_change(admin_client: Client, team: Team, dead_host: Host) -> None:
    stopped = Sandbox.objects.create(team=team, host=dead_host, status=Status.STOPPED)
    response = change(admin_client, stopped, POLICY)
    assert network_errors(response) == ["not applied: capsule is stopped; cannot change its network policy"]
    assert row(stopped).network == DEFAULT


def test_an_unchanged_policy_does_not_ask_the_host(admin_client: Client, stranded_capsule: Sandbox) -> None:
    # The host does not answer, so any call to it would fail the save.
    response = change(admin_client, stranded_capsule, DEFAULT, timeout_sec=600)
    assert response.status_code == 302
    assert (row(stranded_capsule).network, row(stranded_capsule).timeout_sec) == (DEFAULT, 600)


def test_the_same_policy_written_differently_is_unchanged(
    admin_client: Client, team: Team, dead_host: Host
) -> None:
    capsule = Sandbox.objects.create(team=team, host=dead_host, status=Status.RUNNING, network=POLICY)
    reordered = {"deny_out": [], "allow_out": ["10.4.0.0/16"], "allow_internet": False}
    assert change(admin_client, capsule, reordered).status_code == 302


# Creating with a policy


@pytest.fixture
def created(team: Team) -> Iterator[list[Sandbox]]:
    made: list[Sandbox] = []
    yield made
    for capsule in made:
        with contextlib.suppress(ActionError):
            destroy_capsule(capsule)


def add(client: Client, team: Team, network: str) -> Any:
    data = {
        "team": str(team.pk),
        "template": "minimal",
        "vcpus": "1",
        "memory_mb": "512",
        "timeout_sec": "300",
        "metadata": "{}",
        "network": network,
    }
    return client.post(reverse("admin:capsules_sandbox_add"), data)


def test_add_starts_the_capsule_with_its_policy(
    admin_client: Client, team: Team, agent_host: Host, created: list[Sandbox]
) -> None:
    response = add(admin_client, team, '{"allow_internet": false, "allow_out": ["2001:DB8::/32"]}')
    assert response.status_code == 302
    capsule = Sandbox.objects.get()
    created.append(capsule)
    assert capsule.status == Status.RUNNING
    assert capsule.network == {"allow_internet": False, "allow_out": ["2001:db8::/32"], "deny_out": []}


def test_add_with_a_bad_policy_creates_nothing(admin_client: Client, team: Team, agent_host: Host) -> None:
    response = add(admin_client, team, '{"allow_internet": "no"}')
    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == [
        "network.allow_internet must be true or false, not str"
    ]
    assert not Sandbox.objects.exists()


# Events


def test_events_are_shown_newest_first_and_read_only(admin_client: Client, team: Team, host: Host) -> None:
    now = timezone.now()
    events = [
        new_event("oom_kill", "the out-of-memory killer ended 1 process (memory limit 128 MiB)", now),
        new_event("oom_kill", "<script>alert(1)</script> ended 2 processes", now),
    ]
    capsule = Sandbox.objects.create(team=team, host=host, status=Status.RUNNING, events=events, oom_kills=3)
    page = admin_client.get(reverse("admin:capsules_sandbox_change", args=[capsule.pk]))
    content = page.content.decode()
    assert "events" not in page.context["adminform"].form.fields
    items = re.findall(r"<li><time>.*?</time> <b>oom_kill</b>: (.*?)</li>", content)
    assert items == [
        "&lt;script&gt;alert(1)&lt;/script&gt; ended 2 processes",
        "the out-of-memory killer ended 1 process (memory limit 128 MiB)",
    ]
    assert re.search(r'<div class="readonly">3</div>', content)


def test_a_capsule_without_events_says_none(admin_client: Client, capsule: Sandbox) -> None:
    content = admin_client.get(reverse("admin:capsules_sandbox_change", args=[capsule.pk])).content.decode()
    assert re.search(r'<div class="readonly">none</div>', content)


# Hosts' isolation


ISOLATION = {
    "network": {"on": True, "reason": ""},
    "limits": {"on": False, "reason": "no writable cgroup hierarchy"},
    "seccomp": {"on": True, "reason": "<b>filter</b> loaded"},
}


def test_host_list_summarises_isolation(admin_client: Client, host: Host) -> None:
    Host.objects.filter(pk=host.pk).update(isolation=ISOLATION)
    content = admin_client.get(reverse("admin:capsules_host_changelist")).content.decode()
    assert '<td class="field-isolation_summary">network on, limits off, seccomp on</td>' in content


def test_parts_beyond_the_three_follow_them_in_order(admin_client: Client, host: Host) -> None:
    parts = {"userns": {"on": True, "reason": ""}, "apparmor": {"on": False, "reason": ""}, **ISOLATION}
    Host.objects.filter(pk=host.pk).update(isolation=parts)
    content = admin_client.get(reverse("admin:capsules_host_changelist")).content.decode()
    summary = "network on, limits off, seccomp on, apparmor off, userns on"
    assert f'<td class="field-isolation_summary">{summary}</td>' in content


def test_host_list_says_when_isolation_was_never_reported(admin_client: Client, host: Host) -> None:
    content = admin_client.get(reverse("admin:capsules_host_changelist")).content.decode()
    assert '<td class="field-isolation_summary">not reported</td>' in content


def test_host_page_details_isolation_with_the_agents_reasons_escaped(
    admin_client: Client, host: Host
) -> None:
    Host.objects.filter(pk=host.pk).update(isolation=ISOLATION)
    content = admin_client.get(reverse("admin:capsules_host_change", args=[host.pk])).content.decode()
    assert (
        '<ul class="isolation"><li><b>network</b> on</li>'
        "<li><b>limits</b> off — no writable cgroup hierarchy</li>"
        "<li><b>seccomp</b> on — &lt;b&gt;filter&lt;/b&gt; loaded</li></ul>"
    ) in content


def test_host_isolation_is_not_editable(admin_client: Client, host: Host) -> None:
    form = admin_client.get(reverse("admin:capsules_host_change", args=[host.pk])).context["adminform"].form
    assert list(form.fields) == ["address", "status"]
