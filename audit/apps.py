"""The audit app: an append-only trail of who did what to which capsule, terminal and key."""

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connects the receiver of refused passwords (django.contrib.auth's user_login_failed).
        from audit import signins  # noqa: F401
