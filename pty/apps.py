from django.apps import AppConfig


class PtyConfig(AppConfig):
    name = "pty"
    label = "pty"
    verbose_name = "Terminals"
