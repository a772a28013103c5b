"""`manage.py demo`: idempotent demo records, a stable key, and a clear warning when no agent answers."""

import json
import stat
from io import StringIO
from pathlib import Path
from typing import Any

import grpc
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from pytest_django import Settings

from capsules.keys import authenticate_api_key
from capsules.models import APIKey, Host, Membership, Sandbox, Team
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.support.hostagent import HostAgentProcess, free_port, start_hostagent


@pytest.fixture
def demo_settings(settings: Settings, tmp_path: Path, db: None, agent: HostAgentProcess) -> Settings:
    """DATA_DIR in a fresh folder and the address of a real host agent."""
    settings.DATA_DIR = tmp_path / "data"
    settings.HOSTAGENT_ADDR = agent.address
    return settings


@pytest.fixture
def no_agent_settings(settings: Settings, tmp_path: Path, db: None) -> Settings:
    """DATA_DIR in a fresh folder and a host agent address nobody listens on."""
    settings.DATA_DIR = tmp_path / "data"
    settings.HOSTAGENT_ADDR = f"127.0.0.1:{free_port()}"
    return settings


def run_demo(*args: str) -> tuple[str, str]:
    stdout, stderr = StringIO(), StringIO()
    call_command("demo", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def run_demo_json() -> dict[str, Any]:
    stdout, _ = run_demo("--json")
    result: dict[str, Any] = json.loads(stdout)
    return result


def test_json_output_has_exactly_the_documented_fields(demo_settings: Settings) -> None:
    result = run_demo_json()
    assert set(result) == {
        "username",
        "password",
        "team_id",
        "api_key",
        "capsule_id",
        "host",
        "terminal_path",
    }
    assert result["username"] == "demo"
    assert result["password"] == "wrenn-demo"
    assert result["host"] == demo_settings.HOSTAGENT_ADDR
    assert result["terminal_path"] == f"/capsules/{result['capsule_id']}/terminal/"


def test_demo_creates_a_superuser_owning_the_demo_team(demo_settings: Settings) -> None:
    result = run_demo_json()
    user = get_user_model().objects.get(username="demo")
    assert user.is_superuser
    assert user.is_staff
    assert user.is_active
    assert user.email == "demo@wrenn.local"
    assert user.check_password("wrenn-demo")
    team = Team.objects.get(slug="demo")
    assert team.name == "Demo team"
    assert str(team.id) == result["team_id"]
    assert Membership.objects.get(user=user, team=team).role == Membership.Role.OWNER


def test_demo_creates_a_running_capsule_on_the_configured_host(demo_settings: Settings) -> None:
    result = run_demo_json()
    capsule = Sandbox.objects.get(pk=result["capsule_id"])
    assert capsule.status == Sandbox.Status.RUNNING
    assert capsule.started_at is not None
    assert capsule.metadata == {"demo": "true"}
    assert capsule.host == Host.objects.get(address=demo_settings.HOSTAGENT_ADDR, status=Host.Status.ONLINE)


def test_demo_key_authenticates_for_the_demo_team(demo_settings: Settings) -> None:
    result = run_demo_json()
    key = authenticate_api_key(result["api_key"])
    assert key is not None
    assert str(key.team_id) == result["team_id"]
    assert key.name == "demo"


def test_demo_twice_is_idempotent_and_prints_the_same_key(demo_settings: Settings) -> None:
    first = run_demo_json()
    second = run_demo_json()
    assert first == second
    assert get_user_model().objects.filter(username="demo").count() == 1
    assert Team.objects.count() == 1
    assert Sandbox.objects.count() == 1
    assert Host.objects.count() == 1
    assert APIKey.objects.count() == 1


def test_raw_key_is_kept_in_a_private_file(demo_settings: Settings) -> None:
    result = run_demo_json()
    path = Path(demo_settings.DATA_DIR) / "demo.json"
    assert json.loads(path.read_text())["api_key"] == result["api_key"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_lost_key_file_issues_a_new_key_and_revokes_the_old(demo_settings: Settings) -> None:
    first = run_demo_json()
    (Path(demo_settings.DATA_DIR) / "demo.json").unlink()
    second = run_demo_json()
    assert second["api_key"] != first["api_key"]
    assert authenticate_api_key(first["api_key"]) is None
    assert authenticate_api_key(second["api_key"]) is not None


def test_revoked_key_is_replaced(demo_settings: Settings) -> None:
    first = run_demo_json()
    APIKey.objects.update(revoked_at="2020-01-01T00:00:00Z")
    second = run_demo_json()
    assert second["api_key"] != first["api_key"]
    assert authenticate_api_key(second["api_key"]) is not None


def test_rerun_resets_the_demo_password(demo_settings: Settings) -> None:
    run_demo_json()
    user = get_user_model().objects.get(username="demo")
    user.set_password("changed-by-someone")
    user.save()
    run_demo_json()
    user.refresh_from_db()
    assert user.check_password("wrenn-demo")


def test_password_comes_from_the_environment(
    demo_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRENN_DEMO_PASSWORD", "from-the-env")
    result = run_demo_json()
    assert result["password"] == "from-the-env"
    assert get_user_model().objects.get(username="demo").check_password("from-the-env")


def test_unreachable_agent_warns_on_stderr_only(no_agent_settings: Settings) -> None:
    stdout, stderr = run_demo("--json")
    capsule_id = json.loads(stdout)["capsule_id"]
    assert stderr.startswith(
        f"warning: the host agent at {no_agent_settings.HOSTAGENT_ADDR} did not create capsule {capsule_id} "
        "(sandbox host is not reachable)."
    )


def test_a_capsule_no_agent_made_is_in_error_not_running(no_agent_settings: Settings) -> None:
    """The demo's capsule goes through the same create as the API's: no agent, no running capsule."""
    capsule = Sandbox.objects.get(pk=run_demo_json()["capsule_id"])
    assert capsule.status == Sandbox.Status.ERROR
    # The next run, with the agent still away, tries again rather than reviving the failed one.
    again = run_demo_json()["capsule_id"]
    assert again != capsule.pk
    assert Sandbox.objects.get(pk=again).status == Sandbox.Status.ERROR


def test_human_output_lists_the_credentials(demo_settings: Settings) -> None:
    stdout, _ = run_demo()
    capsule = Sandbox.objects.get()
    key_prefix = APIKey.objects.get().prefix
    for expected in (
        "demo",
        "wrenn-demo",
        str(capsule.team_id),
        key_prefix,
        f"/capsules/{capsule.id}/terminal/",
    ):
        assert expected in stdout


@pytest.mark.agent
def test_demo_creates_the_capsule_on_a_real_agent(settings: Settings, tmp_path: Path, db: None) -> None:
    agent = start_hostagent(tmp_path / "agent")
    try:
        settings.DATA_DIR = tmp_path / "data"
        settings.HOSTAGENT_ADDR = agent.address
        stdout, stderr = run_demo("--json")
        assert stderr == ""
        capsule_id = json.loads(stdout)["capsule_id"]
        with grpc.insecure_channel(agent.address) as channel:
            listed = pb_grpc.HostAgentStub(channel).ListSandboxes(pb.ListSandboxesRequest(), timeout=5)
        assert capsule_id in [sandbox.sandbox_id for sandbox in listed.sandboxes]
        _, stderr_again = run_demo("--json")
        assert stderr_again == ""
    finally:
        agent.stop()


def test_the_demo_capsule_is_never_paused_for_idleness(demo_settings: Settings) -> None:
    capsule = Sandbox.objects.get(pk=run_demo_json()["capsule_id"])
    assert capsule.timeout_sec == 0


def test_a_destroyed_demo_capsule_is_replaced(demo_settings: Settings) -> None:
    first = run_demo_json()["capsule_id"]
    Sandbox.objects.filter(pk=first).update(status=Sandbox.Status.STOPPED)
    second = run_demo_json()["capsule_id"]
    assert second != first
    assert Sandbox.objects.get(pk=second).status == Sandbox.Status.RUNNING


def test_a_paused_demo_capsule_stays_paused(demo_settings: Settings) -> None:
    first = run_demo_json()["capsule_id"]
    Sandbox.objects.filter(pk=first).update(status=Sandbox.Status.PAUSED)
    assert run_demo_json()["capsule_id"] == first
    assert Sandbox.objects.get(pk=first).status == Sandbox.Status.PAUSED


def test_the_demo_capsule_has_the_default_templates_sizes(demo_settings: Settings) -> None:
    capsule = Sandbox.objects.get(pk=run_demo_json()["capsule_id"])
    assert (capsule.template, capsule.vcpus, capsule.memory_mb, capsule.disk_size_mb) == (
        "minimal",
        1,
        512,
        1024,
    )
