"""Public API routes of the capsules app, mounted under /v1/ and /api/v1/."""

from django.urls import URLPattern, URLResolver, include, path, re_path
from drf_spectacular.views import SpectacularJSONAPIView
from rest_framework.permissions import AllowAny

from audit import api as audit_api
from capsules.api import auth_views, event_views, file_views, key_views, metrics_views, process_views, views
from capsules.api.errors import unknown_endpoint
from capsules.api.host_views import DocumentedHeartbeatView
from recordings import host_views as recording_host_views
from recordings import views as recording_views

urlpatterns: list[URLPattern | URLResolver] = [
    path("auth/token", auth_views.DocumentedTokenObtainView.as_view(), name="token-obtain"),
    path("auth/token/refresh", auth_views.DocumentedTokenRefreshView.as_view(), name="token-refresh"),
    path("auth/login", auth_views.LoginView.as_view(), name="auth-login"),
    path("auth/refresh", auth_views.DocumentedTokenRefreshView.as_view(), name="auth-refresh"),
    path("auth/switch-team", auth_views.SwitchTeamView.as_view(), name="auth-switch-team"),
    path("capsules", views.CapsuleListView.as_view(), name="capsule-list"),
    # Before capsules/<capsule_id>, which would take these words for ids (capsule ids start with
    # "cl-", so no capsule is ever hidden by them: tests/api/test_metrics.py).
    path("capsules/stats", metrics_views.CapsuleStatsView.as_view(), name="capsule-stats"),
    path("capsules/usage", metrics_views.CapsuleUsageView.as_view(), name="capsule-usage"),
    path("capsules/<str:capsule_id>", views.CapsuleDetailView.as_view(), name="capsule-detail"),
    path("capsules/<str:capsule_id>/pause", views.CapsulePauseView.as_view(), name="capsule-pause"),
    path("capsules/<str:capsule_id>/resume", views.CapsuleResumeView.as_view(), name="capsule-resume"),
    path("capsules/<str:capsule_id>/ping", views.CapsulePingView.as_view(), name="capsule-ping"),
    path("capsules/<str:capsule_id>/network", views.CapsuleNetworkView.as_view(), name="capsule-network"),
    path("capsules/<str:capsule_id>/exec", process_views.ExecView.as_view(), name="capsule-exec"),
    path("capsules/<str:capsule_id>/processes", process_views.ProcessListView.as_view(), name="process-list"),
    path(
        "capsules/<str:capsule_id>/processes/<str:selector>",
        process_views.ProcessDetailView.as_view(),
        name="process-detail",
    ),
    path(
        "capsules/<str:capsule_id>/metrics",
        metrics_views.CapsuleMetricsView.as_view(),
        name="capsule-metrics",
    ),
    path(
        "capsules/<str:capsule_id>/recordings",
        recording_views.RecordingListView.as_view(),
        name="api-recording-list",
    ),
    path(
        "capsules/<str:capsule_id>/recordings/<str:tag>",
        recording_views.RecordingCastView.as_view(),
        name="api-recording-cast",
    ),
    path(
        "capsules/<str:capsule_id>/recordings/<str:tag>/text",
        recording_views.RecordingTextView.as_view(),
        name="api-recording-text",
    ),
    path("events/stream", event_views.event_stream, name="events-stream"),
    # Preview links and public ports (the previews app).
    path("capsules/<str:capsule_id>/", include("previews.urls")),
    # Share links into a terminal session (the shares app).
    path("capsules/<str:capsule_id>/", include("shares.urls")),
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
    path("audit", audit_api.AuditListView.as_view(), name="audit-list"),
    path("api-keys", key_views.APIKeyListView.as_view(), name="api-key-list"),
    path("api-keys/<int:key_id>", key_views.APIKeyDetailView.as_view(), name="api-key-detail"),
    path("hosts/heartbeat", DocumentedHeartbeatView.as_view(), name="host-heartbeat"),
    path(
        "hosts/recordings/<str:capsule_id>/<str:tag>/<int:seq>",
        recording_host_views.RecordingChunkView.as_view(),
        name="host-recording-chunk",
    ),
    path(
        "openapi.json",
        SpectacularJSONAPIView.as_view(authentication_classes=[], permission_classes=[AllowAny]),
        name="openapi",
    ),
    # Last: every other path under the API prefixes answers the JSON 404, whatever DEBUG says.
    re_path(r"^", unknown_endpoint),
]
