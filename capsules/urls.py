"""Public API routes of the capsules app, mounted under /v1/ and /api/v1/."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
