"""Markers never hold up a viewer, whatever the agent does; the options a terminal's start carries."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from capsules.models import Team
from recordings import marks
from recordings.options import recording_for

pytestmark = pytest.mark.timeout(60)


async def test_a_marker_for_an_agent_that_is_away_returns_at_once_and_fails_quietly(settings: Any) -> None:
    settings.HOSTAGENT_RPC_TIMEOUT = 2
    # Nothing listens on port 9 (discard): the call fails, the viewer never sees it.
    marks.mark_soon("127.0.0.1:9", "cl-0000000000000000", "pty-00000000", "join user:alice")
    (task,) = [t for t in marks._pending if not t.done()]
    assert await asyncio.wait_for(task, 30) is False


@pytest.mark.django_db
def test_the_start_carries_the_teams_choice_and_the_cap(settings: Any) -> None:
    settings.WRENN_RECORDING_MAX_BYTES = 123456
    team = Team.objects.create(name="R", slug="r")
    options = recording_for(str(team.pk), "cl-1", "pty-0a1b2c3d")
    assert (options.enabled, options.input, options.max_bytes) == (True, False, 123456)
    assert options.title == "cl-1 pty-0a1b2c3d"
    team.record_input = True
    team.save()
    assert recording_for(str(team.pk), "cl-1", "pty-0a1b2c3d").input is True
    team.record_terminals = False
    team.save()
    assert recording_for(str(team.pk), "cl-1", "pty-0a1b2c3d").enabled is False
