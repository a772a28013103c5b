"""Terminal page routes."""

from django.urls import URLPattern, path

from . import views

urlpatterns: list[URLPattern] = [
    path("capsules/<str:capsule_id>/terminal/", views.capsule_terminal, name="capsule-terminal"),
]
