"""`manage.py demo [--json]`: an idempotent demo account, team, host, running capsule and API key.

Only a key's hash is stored, so the raw demo key is kept in DATA_DIR/demo.json
(mode 600) and a re-run prints the same credentials.
"""

import json
import os
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from capsules.actions import ActionError, create_capsule
from capsules.keys import create_api_key, hash_key, revoke_api_keys
from capsules.models import APIKey, Host, Membership, Sandbox, Team
from capsules.services import terminal_path

DEMO_USERNAME = "demo"
DEMO_EMAIL = "demo@wrenn.local"
DEFAULT_DEMO_PASSWORD = "wrenn-demo"  # noqa: S105 - documented development credential
DEMO_TEAM_SLUG = "demo"
DEMO_KEY_NAME = "demo"


class Command(BaseCommand):
    help = "Create (or refresh) the demo user, team, host, running capsule and API key, and print them."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    def handle(self, *args: Any, **options: Any) -> None:
        password = os.environ.get("WRENN_DEMO_PASSWORD") or DEFAULT_DEMO_PASSWORD
        with transaction.atomic():
            user = self._demo_user(password)
            team = self._demo_team(user)
            host = self._demo_host()
            api_key = self._demo_key(team, user)
        # Outside the transaction: the actions commit their own steps.
        capsule = self._demo_capsule(team, host)
        result = {
            "username": user.get_username(),
            "password": password,
            "team_id": str(team.pk),
            "api_key": api_key,
            "capsule_id": capsule.id,
            "host": host.address,
            "terminal_path": terminal_path(capsule.id),
        }
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        width = max(len(k) for k in result)
        self.stdout.write("Wrenn demo is ready:")
        for label, value in result.items():
            self.stdout.write(f"  {label.replace('_', ' '):<{width}}  {value}")

    def _demo_user(self, password: str) -> Any:
        user, _ = get_user_model().objects.get_or_create(
            username=DEMO_USERNAME, defaults={"email": DEMO_EMAIL}
        )
        # Reset on every run so the printed credentials always work.
        user.email = user.email or DEMO_EMAIL
        user.is_active = user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        return user

    def _demo_team(self, user: Any) -> Team:
        team, _ = Team.objects.get_or_create(slug=DEMO_TEAM_SLUG, defaults={"name": "Demo team"})
        Membership.objects.update_or_create(user=user, team=team, defaults={"role": Membership.Role.OWNER})
        return team

    def _demo_host(self) -> Host:
        host, _ = Host.objects.update_or_create(
            address=settings.HOSTAGENT_ADDR, defaults={"status": Host.Status.ONLINE}
        )
        return host

    def _demo_capsule(self, team: Team, host: Host) -> Sandbox:
        """The demo capsule on the configured host agent: the one there is, running or paused (a
        paused one stays paused: resume it with the API), else a new one made by the same action
        as the API's create."""
        capsule = (
            team.sandboxes.filter(
                metadata__demo="true", host=host, status__in=[Sandbox.Status.RUNNING, Sandbox.Status.PAUSED]
            )
            .order_by("created_at")
            .first()
        )
        if capsule is not None:
            return capsule
        try:
            # timeout_sec 0: the idle reaper never pauses the demo capsule under a new user.
            return create_capsule(team, timeout_sec=0, metadata={"demo": "true"}, host=host)
        except ActionError as exc:
            failed = team.sandboxes.filter(metadata__demo="true", host=host).order_by("-created_at").first()
            self.stderr.write(
                f"warning: the host agent at {host.address} did not create capsule "
                f"{failed.pk if failed else '(none)'} ({exc.message}). Start it with `python -m hostagent` "
                "and run `manage.py demo` again."
            )
            if failed is None:
                raise CommandError(exc.message) from exc
            return failed

    def _demo_key(self, team: Team, user: Any) -> str:
        path = Path(settings.DATA_DIR) / "demo.json"
        raw_key = _read_saved_key(path)
        live = APIKey.objects.filter(team=team, revoked_at__isnull=True)
        if raw_key and live.filter(key_hash=hash_key(raw_key)).exists():
            return raw_key
        # Earlier demo keys whose raw value is lost can no longer be printed; retire them.
        revoke_api_keys(live.filter(name=DEMO_KEY_NAME))
        _, raw_key = create_api_key(team, DEMO_KEY_NAME, created_by=user)
        _write_private_json(path, {"api_key": raw_key, "team_id": str(team.pk)})
        return raw_key


def _read_saved_key(path: Path) -> str | None:
    try:
        value = json.loads(path.read_text()).get("api_key")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _write_private_json(path: Path, data: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # O_CREAT's mode does not apply to an existing file.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(data, file)
        file.write("\n")
