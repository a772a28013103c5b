"""Public API routes of the capsules app, mounted under /v1/ and /api/v1/."""

from django.urls import URLPattern, path, re_path
from drf_spectacular.views import SpectacularJSONAPIView
from rest_framework.permissions import AllowAny

from capsules.api import auth_views, file_views, key_views, views
from capsules.api.errors import unknown_endpoint
from capsules.api.host_views import DocumentedHeartbeatView

urlpatterns: list[URLPattern] = [
    path("auth/token", auth_views.DocumentedTokenObtainView.as_view(), name="token-obtain"),
    path("auth/token/refresh", auth_views.DocumentedTokenRefreshView.as_view(), name="token-refresh"),
    path("auth/login", auth_views.LoginView.as_view(), name="auth-login"),
    path("auth/refresh", auth_views.DocumentedTokenRefreshView.as_view(), name="auth-refresh"),
    path("auth/switch-team", auth_views.SwitchTeamView.as_view(), name="auth-switch-team"),
    path("capsules", views.CapsuleListView.as_view(), name="capsule-list"),
    path("capsules/<str:capsule_id>", views.CapsuleDetailView.as_view(), name="capsule-detail"),
    path("capsules/<str:capsule_id>/pause", views.CapsulePauseView.as_view(), name="capsule-pause"),
    path("capsules/<str:capsule_id>/resume", views.CapsuleResumeView.as_view(), name="capsule-resume"),
    path("capsules/<str:capsule_id>/ping", views.CapsulePingView.as_view(), name="capsule-ping"),
    path("capsules/<str:capsule_id>/network", views.CapsuleNetworkView.as_view(), name="capsule-network"),
    path("capsules/<str:capsule_id>/files/list", file_views.FilesListView.as_view(), name="files-list"),
    path("capsules/<str:capsule_id>/files/mkdir", file_views.FilesMakeDirView.as_view(), name="files-mkdir"),
    path("capsules/<str:capsule_id>/files/remove", file_views.FilesRemoveView.as_view(), name="files-remove"),
    path("capsules/<str:capsule_id>/files/read", file_views.FilesReadView.as_view(), name="files-read"),
    path("capsules/<str:capsule_id>/files/write", file_views.FilesWriteView.as_view(), name="files-write"),
    path(
        "capsules/<str:capsule_id>/files/stream/read",
        file_views.FilesReadView.as_view(),
        name="files-stream-read",
    ),
    path(
        "capsules/<str:capsule_id>/files/stream/write",
        file_views.FilesStreamWriteView.as_view(),
        name="files-stream-write",
    ),
    path("api-keys", key_views.APIKeyListView.as_view(), name="api-key-list"),
    path("api-keys/<int:key_id>", key_views.APIKeyDetailView.as_view(), name="api-key-detail"),
    path("hosts/heartbeat", DocumentedHeartbeatView.as_view(), name="host-heartbeat"),
    path(
        "openapi.json",
        SpectacularJSONAPIView.as_view(authentication_classes=[], permission_classes=[AllowAny]),
        name="openapi",
    ),
    # Last: every other path under the API prefixes answers the JSON 404, whatever DEBUG says.
    re_path(r"^", unknown_endpoint),
]
