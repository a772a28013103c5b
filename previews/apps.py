"""The previews app: preview links, public ports, and the proxy in front of the ASGI application."""

from django.apps import AppConfig


class PreviewsConfig(AppConfig):
    name = "previews"
    default_auto_field = "django.db.models.BigAutoField"
