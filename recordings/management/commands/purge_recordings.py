"""`manage.py purge_recordings`: delete the recordings past their team's retention, with their files.

The monitor does the same once per interval; this is for a cron job where no monitor runs, or to
apply a shortened retention at once.
"""

from typing import Any

from django.core.management.base import BaseCommand

from recordings.retention import purge_expired


class Command(BaseCommand):
    help = "Delete terminal recordings older than their team's retention (WRENN_RECORDING_RETENTION_DAYS)."

    def handle(self, *args: Any, **options: Any) -> None:
        count = purge_expired()
        self.stdout.write(f"deleted {count} recording(s) past retention")
