"""Terminal page routes."""

from django.urls import URLPattern, path

from . import views

urlpatterns: list[URLPattern] = [
    path("capsules/<str:capsule_id>/terminal/", views.capsule_terminal, name="capsule-terminal"),
    # A share link: the terminal page watching one session, without a login.
    path("shared/<str:token>/", views.shared_terminal, name="shared-terminal"),
]
