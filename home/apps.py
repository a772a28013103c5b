"""The people's pages: the signed-in person's home at `/` and the recording playback page."""

from django.apps import AppConfig


class HomeConfig(AppConfig):
    name = "home"
    verbose_name = "Home"
