"""The shares app: links that let someone without an account watch one terminal session."""

from django.apps import AppConfig


class SharesConfig(AppConfig):
    name = "shares"
    default_auto_field = "django.db.models.BigAutoField"
