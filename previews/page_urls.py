"""The app's page route into a preview (previews/views.py), beside the terminal page's."""

from django.urls import URLPattern, path

from previews import views

urlpatterns: list[URLPattern] = [
    path("capsules/<str:capsule_id>/preview/<str:port>/", views.open_preview, name="capsule-preview"),
]
