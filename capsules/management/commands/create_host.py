"""`manage.py create_host ADDRESS [--rotate] [--json]`: register a host agent and print its heartbeat token.

The token is printed once; only its hash is stored. `--rotate` issues a new token for an existing
host, and the old one stops working at once.
"""

import json
import shlex
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from capsules.hosts import clean_address, issue_host_token
from capsules.models import Host
from capsules.validation import ValidationFailed

# The agent reads its token from the environment (or --register-token-file), so it stays out of `ps`.
TOKEN_ENV = "HOSTAGENT_REGISTER_TOKEN"  # noqa: S105 - a variable name, not a secret
DEFAULT_CONTROL_PLANE_URL = "http://127.0.0.1:8000"


def agent_command(address: str, raw_token: str, control_plane_url: str) -> str:
    return (
        f"{TOKEN_ENV}={raw_token} python -m hostagent --listen {shlex.quote(address)} "
        f"--control-plane {shlex.quote(control_plane_url.rstrip('/'))}"
    )


class Command(BaseCommand):
    help = "Register a host agent (or re-issue its token with --rotate) and print its heartbeat token once."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("address", help="host:port where the control plane reaches the agent's gRPC")
        parser.add_argument("--rotate", action="store_true", help="issue a new token for an existing host")
        parser.add_argument(
            "--url",
            default=DEFAULT_CONTROL_PLANE_URL,
            help=f"this control plane's base URL for heartbeats (default {DEFAULT_CONTROL_PLANE_URL})",
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            address = clean_address(options["address"])
        except ValidationFailed as exc:
            raise CommandError(exc.message) from None
        with transaction.atomic():
            host = Host.objects.select_for_update().filter(address=address).first()
            if host is not None and not options["rotate"]:
                raise CommandError(f"host {address} already exists; use --rotate to issue it a new token")
            if host is None and options["rotate"]:
                raise CommandError(f"no host {address} to rotate; leave out --rotate to create it")
            if host is None:
                host = Host.objects.create(address=address)
            raw_token = issue_host_token(host)
        result = {
            "host_id": str(host.pk),
            "address": host.address,
            "token": raw_token,
            "token_prefix": host.token_prefix,
            "command": agent_command(host.address, raw_token, options["url"]),
        }
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        verb = "Issued a new token for" if options["rotate"] else "Registered"
        self.stdout.write(f"{verb} host {host.address} (id {host.pk}).")
        self.stdout.write(f"Heartbeat token: {raw_token}")
        self.stdout.write("Copy it now: it is stored only as a hash and will not be shown again.")
        self.stdout.write(f"Start the agent with:\n  {result['command']}")
