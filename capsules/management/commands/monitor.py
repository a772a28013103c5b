"""`manage.py monitor [--interval 5] [--once]`: declare quiet hosts unreachable, pause idle capsules,
close terminal sessions left open on destroyed ones, and sample the teams' reservations and prune
old metrics and recordings once per heartbeat interval (capsules/metrics.py, recordings/retention.py).

Several monitors may run at once (one per machine, say): every change re-checks its condition
under a row lock, so two passes never apply the same change twice.
"""

import logging
import signal
import threading
from argparse import ArgumentParser
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections
from django.utils import timezone

from capsules import metrics
from capsules.actions import reap_idle
from capsules.hosts import check_hosts
from capsules.terminals import close_sessions_of_stopped_capsules
from recordings.ingest import close_abandoned
from recordings.retention import purge_expired

log = logging.getLogger("capsules.monitor")


def run_pass() -> None:
    """One round of checks; what changed is logged by the functions and summed up here."""
    hosts = check_hosts()
    paused = reap_idle()
    closed = close_sessions_of_stopped_capsules()
    if metrics.housekeeping(timezone.now()):
        purge_expired()
    close_abandoned()
    if closed:
        log.info("monitor pass: %d terminal session(s) of destroyed capsules closed", closed)
    if hosts or paused:
        log.info(
            "monitor pass: %d host(s) declared unreachable or lost capsules, %d idle capsule(s) paused",
            len(hosts),
            len(paused),
        )


class Command(BaseCommand):
    help = "Watch host heartbeats and pause idle capsules, every --interval seconds until stopped."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--interval", type=float, default=5.0, help="seconds between passes (default 5)")
        parser.add_argument("--once", action="store_true", help="run one pass and exit")

    def handle(self, *args: Any, **options: Any) -> None:
        interval: float = options["interval"]
        if interval <= 0:
            raise CommandError("--interval must be positive")
        if options["once"]:
            run_pass()
            return
        stop = threading.Event()

        def request_stop(signum: int, frame: FrameType | None) -> None:
            log.info("monitor stopping (signal %d)", signum)
            stop.set()

        previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGTERM, signal.SIGINT)}
        log.info("monitor started: a pass every %s s", interval)
        try:
            while not stop.is_set():
                # A database restart must not end the monitor: drop dead connections, retry next pass.
                close_old_connections()
                try:
                    run_pass()
                except Exception:
                    log.exception("monitor pass failed; retrying in %s s", interval)
                stop.wait(interval)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        log.info("monitor stopped")
