"""Preview API routes, under /v1/capsules/<capsule_id>/previews (included by capsules/urls.py)."""

from django.urls import URLPattern, path

from previews import api

urlpatterns: list[URLPattern] = [
    path("", api.LinkListView.as_view(), name="preview-link-list"),
    path("ports", api.PortListView.as_view(), name="preview-port-list"),
    path("ports/<str:port>", api.PortDetailView.as_view(), name="preview-port-detail"),
    path("<str:link_id>", api.LinkDetailView.as_view(), name="preview-link-detail"),
]
