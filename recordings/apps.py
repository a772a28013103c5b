"""The recordings app: every terminal session as asciicast v2, kept in Django's storage."""

from django.apps import AppConfig


class RecordingsConfig(AppConfig):
    name = "recordings"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from recordings import signals  # noqa: F401 - connects the receivers
