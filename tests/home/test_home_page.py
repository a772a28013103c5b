"""The home page: the current team's capsules with their size, age, live terminals and recordings;
the team switcher, remembered in the session; nothing of a team the person is not in."""

import re
import time
import uuid
from datetime import timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from capsules.models import Membership, Sandbox, Team, TerminalSession
from pty.roster import Entry, local_store, roster_key
from pty.stream import group_name
from tests.home.conftest import cast_lines, make_recording

Status = Sandbox.Status


def article(response: Any, capsule: Sandbox) -> str:
    """The HTML of one capsule's block on the page."""
    match = re.search(
        rf'<article class="capsule card" id="capsule-{capsule.pk}".*?</article>',
        response.content.decode(),
        re.S,
    )
    assert match is not None, f"{capsule.pk} is not on the page"
    return match.group(0)


def test_the_page_lists_the_team_capsules_with_status_size_and_age(
    client_of: Client, capsule: Sandbox
) -> None:
    Sandbox.objects.filter(pk=capsule.pk).update(created_at=timezone.now() - timedelta(hours=3, minutes=5))
    response = client_of.get("/")
    assert response.status_code == 200
    block = article(response, capsule)
    assert 'data-status="running"' in block
    assert "2 vCPUs" in block
    assert "768 MB" in block
    assert "created 3\xa0hours, 5\xa0minutes ago" in block


def test_a_capsule_of_another_team_is_not_shown(
    client_of: Client, capsule: Sandbox, foreign_capsule: Sandbox
) -> None:
    body = client_of.get("/").content.decode()
    assert capsule.pk in body
    assert foreign_capsule.pk not in body


def test_stopped_capsules_are_listed_apart(client_of: Client, capsule: Sandbox) -> None:
    capsule.status = Status.STOPPED
    capsule.save()
    body = client_of.get("/").content.decode()
    stopped = body[body.index('id="stopped"') :]
    assert capsule.pk in stopped
    assert 'id="no-capsules"' in body


def test_buttons_follow_the_status(client_of: Client, capsule: Sandbox) -> None:
    running = article(client_of.get("/"), capsule)
    assert 'data-verb="pause"' in running
    assert 'data-verb="destroy"' in running
    assert 'data-verb="resume"' not in running
    assert f'href="/capsules/{capsule.pk}/terminal/?new=1"' in running
    capsule.status = Status.PAUSED
    capsule.save()
    paused = article(client_of.get("/"), capsule)
    assert 'data-verb="resume"' in paused
    assert 'data-verb="pause"' not in paused
    assert "new-terminal" not in paused


def session_row(block: str, tag: str) -> str:
    row = re.search(rf'<tr class="session" data-tag="{tag}">(.*?)</tr>', block, re.S)
    assert row is not None, f"{tag} is not on the page"
    return row.group(1)


def test_live_sessions_show_who_watches_and_open_and_watch_links(client_of: Client, capsule: Sandbox) -> None:
    TerminalSession.objects.create(sandbox=capsule, tag="pty-11111111", command="/bin/bash", viewers=2)
    TerminalSession.objects.create(
        sandbox=capsule, tag="pty-22222222", command="vim", ended_at=timezone.now(), exit_code=0
    )
    key = roster_key(group_name(capsule.pk, "pty-11111111"))
    later, earlier = time.time() + 60, time.time() - 1
    entries = [
        Entry("v-1", "user:alice", "peer", "2026-01-01T00:00:00+00:00", "c1", "", True, later),
        Entry("v-2", "share:shr-1", "observer", "2026-01-01T00:00:01+00:00", "c2", "shr-1", False, later),
        # Its worker stopped renewing it: not shown.
        Entry("v-3", "user:gone", "peer", "2026-01-01T00:00:02+00:00", "c3", "", True, earlier),
    ]
    for entry in entries:
        local_store._rosters.setdefault(key, {})[entry.id] = entry.dumps()
    try:
        block = article(client_of.get("/"), capsule)
    finally:
        async_to_sync(local_store.drop)(key)
    row = session_row(block, "pty-11111111")
    cell = re.search(r'<td class="viewers">(.*?)</td>', row, re.S)
    assert cell is not None
    assert re.sub(r"<[^>]+>", "", cell.group(1)) == "2: user:alice (peer), share:shr-1 (observer)"
    assert f'href="/capsules/{capsule.pk}/terminal/?tag=pty-11111111"' in row
    assert f'href="/capsules/{capsule.pk}/terminal/?tag=pty-11111111&amp;mode=observer"' in row
    # An ended session is a recording now, not a terminal to open.
    assert 'data-tag="pty-22222222"' not in block


def test_without_the_roster_the_page_shows_the_count_the_rows_keep(
    client_of: Client, capsule: Sandbox, settings: Any
) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    TerminalSession.objects.create(sandbox=capsule, tag="pty-11111111", command="/bin/bash", viewers=3)
    response = client_of.get("/")
    assert response.status_code == 200
    assert '<td class="viewers">3</td>' in session_row(article(response, capsule), "pty-11111111")


def test_recordings_have_play_download_and_text_links(client_of: Client, capsule: Sandbox) -> None:
    make_recording(capsule, "pty-33333333", cast_lines([0.5, "o", "hi"]))
    block = article(client_of.get("/"), capsule)
    row = re.search(r'<tr class="recording" data-tag="pty-33333333">(.*?)</tr>', block, re.S)
    assert row is not None
    assert f'href="/capsules/{capsule.pk}/recordings/pty-33333333/"' in row.group(1)
    assert f'href="/v1/capsules/{capsule.pk}/recordings/pty-33333333"' in row.group(1)
    assert f'href="/v1/capsules/{capsule.pk}/recordings/pty-33333333/text"' in row.group(1)


def test_a_live_session_links_to_its_recording(client_of: Client, capsule: Sandbox) -> None:
    TerminalSession.objects.create(sandbox=capsule, tag="pty-44444444", command="/bin/bash")
    make_recording(capsule, "pty-44444444", cast_lines([0.5, "o", "hi"]), ended=False)
    block = article(client_of.get("/"), capsule)
    row = re.search(r'<tr class="session" data-tag="pty-44444444">(.*?)</tr>', block, re.S)
    assert row is not None
    assert f'class="replay" href="/capsules/{capsule.pk}/recordings/pty-44444444/"' in row.group(1)


def test_only_the_latest_recordings_of_a_capsule_are_listed(client_of: Client, capsule: Sandbox) -> None:
    for n in range(12):
        make_recording(capsule, f"pty-5555{n:04d}")
    block = article(client_of.get("/"), capsule)
    assert block.count('<tr class="recording"') == 10
    assert "the latest 10 of 12" in block


def test_a_person_without_a_team_is_told_so(db: None) -> None:
    loner = get_user_model().objects.create_user(username="loner", password="x")
    client = Client()
    client.force_login(loner)
    response = client.get("/")
    assert response.status_code == 200
    assert 'id="no-team"' in response.content.decode()
    assert 'id="create-form"' not in response.content.decode()


def test_one_team_shows_no_switcher(client_of: Client, team: Team) -> None:
    body = client_of.get("/").content.decode()
    assert 'id="team-switcher"' not in body
    assert f'data-team-id="{team.pk}"' in body


def test_the_switcher_lists_only_the_member_teams(
    client_of: Client, team: Team, second_team: Team, other_team: Team
) -> None:
    body = client_of.get("/").content.decode()
    switcher = body[
        body.index('id="team-switcher"') : body.index("</form>", body.index('id="team-switcher"'))
    ]
    assert str(team.pk) in switcher
    assert str(second_team.pk) in switcher
    assert str(other_team.pk) not in switcher


def test_switching_team_shows_its_capsules_and_is_remembered(
    client_of: Client, capsule: Sandbox, second_team: Team, second_capsule: Sandbox
) -> None:
    assert capsule.pk in client_of.get("/").content.decode()
    response = client_of.post("/team/", {"team": str(second_team.pk)})
    assert response.status_code == 302
    assert response["Location"] == "/"
    body = client_of.get("/").content.decode()
    assert second_capsule.pk in body
    assert capsule.pk not in body
    assert f'data-team-id="{second_team.pk}"' in body


def test_a_team_left_since_is_forgotten(
    client_of: Client, member: Any, team: Team, second_team: Team, capsule: Sandbox, second_capsule: Sandbox
) -> None:
    client_of.post("/team/", {"team": str(second_team.pk)})
    Membership.objects.filter(user=member, team=second_team).delete()
    body = client_of.get("/").content.decode()
    assert second_capsule.pk not in body
    assert capsule.pk in body


def test_switching_to_a_team_of_someone_else_answers_like_a_missing_team(
    client_of: Client, team: Team, other_team: Team, capsule: Sandbox, foreign_capsule: Sandbox
) -> None:
    forged = client_of.post("/team/", {"team": str(other_team.pk)})
    missing = client_of.post("/team/", {"team": str(uuid.uuid4())})
    assert forged.status_code == missing.status_code == 404
    assert f"team &#x27;{other_team.pk}&#x27; not found" in forged.content.decode()
    assert foreign_capsule.pk not in forged.content.decode()
    # The page stays on the member's own team.
    assert capsule.pk in client_of.get("/").content.decode()


def test_switching_to_a_malformed_team_id_answers_like_a_missing_team(client_of: Client, team: Team) -> None:
    for raw in ("", "not-a-uuid", "' OR 1=1 --"):
        assert client_of.post("/team/", {"team": raw}).status_code == 404


def test_the_switcher_takes_only_post(client_of: Client) -> None:
    assert client_of.get("/team/").status_code == 405


def test_the_home_page_takes_only_get(client_of: Client) -> None:
    assert client_of.post("/").status_code == 405
