"""Preview API routes, under /v1/capsules/<capsule_id>/ (included by capsules/urls.py)."""

from django.urls import URLPattern, path

from previews import api

urlpatterns: list[URLPattern] = [
    path("previews", api.LinkListView.as_view(), name="preview-link-list"),
    path("previews/ports", api.PortListView.as_view(), name="preview-port-list"),
    path("previews/ports/<str:port>", api.PortDetailView.as_view(), name="preview-port-detail"),
    path("previews/<str:link_id>", api.LinkDetailView.as_view(), name="preview-link-detail"),
]
