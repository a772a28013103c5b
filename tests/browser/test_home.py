"""The home page in Chromium on the real stack: a person who is not staff signs in at `/`, sees their
team's capsules and live terminals, creates, pauses, resumes and destroys a capsule through the
real host agent, switches team, and never sees nor reaches another team's capsule."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page

from tests.browser.test_terminal_page import wait_for_state
from tests.support.stack import Stack

pytestmark = [pytest.mark.timeout(300)]

PASSWORD = "people-pass-1234"
# Against hangs only: a wait polls and goes on as soon as its condition holds.
HANG_TIMEOUT = 60.0


@dataclass(frozen=True)
class Person:
    username: str
    password: str
    # Team name -> id, of the teams the person is a member of.
    teams: dict[str, str]


def on_stack(stack: Stack, code: str) -> Any:
    """Runs `code` in `manage.py shell` on the stack's database; what it prints is JSON."""
    return json.loads(stack.manage("shell", "--verbosity=0", "-c", code).strip() or "null")


def make_person(stack: Stack, *team_names: str, staff: bool = False) -> Person:
    """A new user, member of new teams named `team_names`, not staff unless asked."""
    username = f"person-{secrets.token_hex(3)}"
    code = f"""
import json
from django.contrib.auth import get_user_model
from capsules.models import Membership, Team
user = get_user_model().objects.create_user(username={username!r}, password={PASSWORD!r}, is_staff={staff!r})
teams = {{}}
for name in {list(team_names)!r}:
    team = Team.objects.create(name=name, slug=f"{{name.lower()}}-{secrets.token_hex(3)}")
    Membership.objects.create(user=user, team=team)
    teams[name] = str(team.pk)
print(json.dumps(teams))
"""
    return Person(username, PASSWORD, on_stack(stack, code))


def foreign_capsule(stack: Stack) -> str:
    """A running capsule row of a team nobody here belongs to (never started: no call reaches it)."""
    code = f"""
from django.utils import timezone
from capsules.models import Host, Sandbox, Team
team = Team.objects.create(name="Stranger", slug="stranger-{secrets.token_hex(3)}")
capsule = Sandbox.objects.create(
    team=team, host=Host.objects.first(), status="running", started_at=timezone.now()
)
print('"' + capsule.pk + '"')
"""
    capsule_id: str = on_stack(stack, code)
    return capsule_id


def capsule_facts(stack: Stack, capsule_id: str) -> dict[str, Any]:
    code = f"""
import json
from capsules.models import Sandbox
capsule = Sandbox.objects.get(pk={capsule_id!r})
count = Sandbox.objects.filter(team_id=capsule.team_id).count()
print(json.dumps({{"team": str(capsule.team_id), "status": capsule.status, "team_capsules": count}}))
"""
    facts: dict[str, Any] = on_stack(stack, code)
    return facts


def sign_in(page: Page, base_url: str, person: Person, next_path: str = "/") -> None:
    """Opens `next_path` signed out, is sent to the login, signs in and lands back there."""
    page.goto(f"{base_url}{next_path}")
    assert urlsplit(page.url).path == "/login/"
    page.fill("#id_username", person.username)
    page.fill("#id_password", person.password)
    page.click("#sign-in")
    page.wait_for_url(lambda url: urlsplit(url).path == urlsplit(next_path).path)


def capsule_ids(page: Page) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        "#capsules article.capsule", "nodes => nodes.map(n => n.dataset.capsuleId)"
    )
    return ids


def status_of(page: Page, capsule_id: str) -> str | None:
    return page.get_attribute(f"#capsule-{capsule_id}", "data-status")


def press(page: Page, capsule_id: str, verb: str) -> None:
    with page.expect_navigation():
        page.click(f"#capsule-{capsule_id} button[data-verb={verb}]")


def reload_until(page: Page, shown: Callable[[], bool]) -> None:
    """Reloads the page until it shows what `shown` checks (the socket records its viewer as it
    joins, which may be a moment after the terminal page says it is connected)."""
    deadline = time.monotonic() + HANG_TIMEOUT
    while not shown():
        assert time.monotonic() < deadline, "the home page never showed it"
        page.wait_for_timeout(200)
        page.reload()


def error_text(page: Page) -> str:
    return (page.text_content("#error") or "").strip()


# The page's own forms, forged: what a tampered page or a script with the person's cookie posts.
FORGE = """async ([path, fields]) => {
  const body = new URLSearchParams(fields);
  body.set("csrfmiddlewaretoken", document.querySelector("[name=csrfmiddlewaretoken]").value);
  const response = await fetch(path, {method: "POST", body, redirect: "manual"});
  const text = await response.text();
  const error = new DOMParser().parseFromString(text, "text/html").querySelector("#error");
  return [response.status, error ? error.textContent.trim() : null, text];
}"""


@pytest.fixture
def person(stack: Stack) -> Person:
    return make_person(stack, "Alpha", "Bravo")


@pytest.fixture
def cleanup(stack: Stack, person: Person) -> Iterator[None]:
    """Whatever capsules the person's teams still hold are destroyed on the agent afterwards."""
    yield
    teams = list(person.teams.values())
    on_stack(
        stack,
        f"""
import contextlib
from capsules.actions import ActionError, destroy_capsule
from capsules.models import Sandbox
for capsule in Sandbox.objects.filter(team_id__in={teams!r}).exclude(status="stopped"):
    with contextlib.suppress(ActionError):
        destroy_capsule(capsule)
""",
    )


def test_anonymous_visitors_go_to_the_login_and_come_back_home(
    chromium_page: Page, stack: Stack, person: Person
) -> None:
    page = chromium_page
    sign_in(page, stack.base_url, person)
    assert page.text_content("#username") == person.username
    # Sign out: back to the login, and `/` sends there again.
    with page.expect_navigation():
        page.click("#logout")
    assert urlsplit(page.url).path == "/login/"
    page.goto(f"{stack.base_url}/")
    assert urlsplit(page.url).path == "/login/"


def test_a_person_runs_a_capsule_from_the_home_page(
    chromium_page: Page, stack: Stack, person: Person, cleanup: None
) -> None:
    page = chromium_page
    sign_in(page, stack.base_url, person)
    assert page.text_content("#team-name") == "Alpha"
    assert capsule_ids(page) == []

    # Create, through the real agent.
    page.fill("#create-vcpus", "1")
    page.fill("#create-memory", "256")
    page.fill("#create-timeout", "0")
    with page.expect_navigation():
        page.click("#create-button")
    [capsule_id] = capsule_ids(page)
    assert status_of(page, capsule_id) == "running"
    block = page.locator(f"#capsule-{capsule_id}")
    assert block.locator(".vcpus").text_content() == "1 vCPU"
    assert block.locator(".memory").text_content() == "256 MB"
    assert f"capsule {capsule_id} created" in (page.text_content(".notices") or "")

    # A new terminal from its button; while it is open, the home page lists it with its viewer.
    terminal = page.context.new_page()
    new_terminal = block.locator("a.new-terminal").get_attribute("href")
    assert new_terminal == f"/capsules/{capsule_id}/terminal/?new=1"
    terminal.goto(f"{stack.base_url}{new_terminal}")
    wait_for_state(terminal, "connected")
    tag = terminal.evaluate("window.wrennTerminal.tag()")
    row = page.locator(f"#capsule-{capsule_id} tr.session[data-tag='{tag}']")
    # Who watches, from the session's roster: the person, as the terminal page's peer.
    watching = f"1: user:{person.username} (peer)"
    reload_until(page, lambda: row.count() == 1 and row.locator(".viewers").text_content() == watching)
    assert row.locator("a.open").get_attribute("href") == f"/capsules/{capsule_id}/terminal/?tag={tag}"
    watch = f"/capsules/{capsule_id}/terminal/?tag={tag}&mode=observer"
    assert row.locator("a.watch").get_attribute("href") == watch
    terminal.close()

    # Pause, resume, destroy.
    press(page, capsule_id, "pause")
    assert status_of(page, capsule_id) == "paused"
    assert f"capsule {capsule_id} paused" in (page.text_content(".notices") or "")
    press(page, capsule_id, "resume")
    assert status_of(page, capsule_id) == "running"
    page.once("dialog", lambda dialog: dialog.accept())
    press(page, capsule_id, "destroy")
    assert capsule_ids(page) == []
    assert page.get_attribute(f"#stopped #capsule-{capsule_id}", "data-status") == "stopped"

    # A refusal is shown on the page: the team's quota.
    alpha = person.teams["Alpha"]
    on_stack(
        stack, f"from capsules.models import Team; Team.objects.filter(pk={alpha!r}).update(max_capsules=0)"
    )
    with page.expect_navigation():
        page.click("#create-button")
    assert error_text(page).startswith("capsule quota exceeded: the team's limit is 0 capsules")
    assert capsule_ids(page) == []


def test_the_team_switcher_shows_each_team_and_is_remembered(
    chromium_page: Page, stack: Stack, person: Person, cleanup: None
) -> None:
    page = chromium_page
    sign_in(page, stack.base_url, person)
    assert page.text_content("#team-name") == "Alpha"
    with page.expect_navigation():
        page.select_option("#team-select", label="Bravo")
    assert page.text_content("#team-name") == "Bravo"
    page.fill("#create-memory", "256")
    with page.expect_navigation():
        page.click("#create-button")
    [bravo_capsule] = capsule_ids(page)
    # Remembered across pages: the terminal page and back.
    page.goto(f"{stack.base_url}/capsules/{bravo_capsule}/terminal/")
    page.goto(f"{stack.base_url}/")
    assert page.text_content("#team-name") == "Bravo"
    assert capsule_ids(page) == [bravo_capsule]
    with page.expect_navigation():
        page.select_option("#team-select", label="Alpha")
    assert capsule_ids(page) == []


def test_another_team_capsule_is_never_shown_nor_actionable(
    chromium_page: Page, stack: Stack, person: Person
) -> None:
    page = chromium_page
    stranger = foreign_capsule(stack)
    stranger_team = capsule_facts(stack, stranger)["team"]
    sign_in(page, stack.base_url, person)
    assert stranger not in (page.content())
    own_team = person.teams["Alpha"]
    for verb in ("pause", "resume", "destroy"):
        path = f"/capsules/{stranger}/{verb}/"
        status, error, body = page.evaluate(FORGE, [path, {"team": own_team}])
        missing = page.evaluate(FORGE, [f"/capsules/cl-00000000000000000000/{verb}/", {"team": own_team}])
        assert (status, error) == (404, f"capsule '{stranger}' not found")
        assert missing[0] == 404
        status, error, body = page.evaluate(FORGE, [path, {"team": stranger_team}])
        assert (status, error) == (404, f"team '{stranger_team}' not found")
        assert stranger not in body.replace(f"team '{stranger_team}'", "")
    status, error, _ = page.evaluate(
        FORGE, ["/capsules/create/", {"team": stranger_team, "memory_mb": "256"}]
    )
    assert (status, error) == (404, f"team '{stranger_team}' not found")
    status, error, _ = page.evaluate(FORGE, ["/team/", {"team": stranger_team}])
    assert (status, error) == (404, f"team '{stranger_team}' not found")
    assert capsule_facts(stack, stranger) == {"team": stranger_team, "status": "running", "team_capsules": 1}
    # Not through the page either: the team the session remembers is still the person's own.
    page.reload()
    assert page.text_content("#team-name") == "Alpha"
