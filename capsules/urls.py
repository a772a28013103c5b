"""Public API routes of the capsules app, mounted under /v1/ and /api/v1/."""

from django.urls import URLPattern, path

from capsules.views import TokenObtainView, TokenRefreshView

urlpatterns: list[URLPattern] = [
    path("auth/token", TokenObtainView.as_view(), name="token-obtain"),
    path("auth/token/refresh", TokenRefreshView.as_view(), name="token-refresh"),
]
