"""Share-link API routes, under /v1/capsules/<capsule_id>/ (included by capsules/urls.py)."""

from django.urls import URLPattern, path

from shares import api

urlpatterns: list[URLPattern] = [
    path("pty/<str:tag>/shares", api.ShareListView.as_view(), name="share-list"),
    path("pty/<str:tag>/shares/<str:share_id>", api.ShareDetailView.as_view(), name="share-detail"),
]
