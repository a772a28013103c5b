"""WebSocket routes, served both at the root and under /api as the public deployment does."""

from django.urls import re_path

from .consumers import AdminPtyConsumer, PtyConsumer

websocket_urlpatterns = [
    re_path(r"^(?:api/)?v1/capsules/(?P<capsule_id>[^/]+)/pty/?$", PtyConsumer.as_asgi()),
    re_path(r"^(?:api/)?v1/admin/capsules/(?P<capsule_id>[^/]+)/pty/?$", AdminPtyConsumer.as_asgi()),
]
