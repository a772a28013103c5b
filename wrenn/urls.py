"""HTTP routes; WebSocket routes live in pty/routing.py."""

from django.contrib import admin
from django.urls import include, path

from capsules.admin_login import admin_login

urlpatterns = [
    # Ahead of the admin's own login route, which it replaces (at the same URL, admin:login).
    path("admin/login/", admin_login),
    path("admin/", admin.site.urls),
    path("v1/", include("capsules.urls")),
    path("api/v1/", include("capsules.urls")),
    path("", include("pty.urls")),
    path("", include("previews.page_urls")),
    path("", include("home.urls")),
]

# JSON for paths under /v1/ and /api/v1/, Django's pages elsewhere.
handler404 = "capsules.api.errors.page_not_found"
handler500 = "capsules.api.errors.server_error"
