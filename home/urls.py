"""The people's pages, mounted at the site's root beside the terminal and preview pages."""

from django.urls import URLPattern, path

from home import auth, playback, views

urlpatterns: list[URLPattern] = [
    path("", views.home, name="home"),
    path("login/", auth.login, name="login"),
    path("logout/", auth.logout, name="logout"),
    path("team/", views.switch_team, name="home-team"),
    path("capsules/create/", views.create_capsule, name="home-create"),
    path("capsules/<str:capsule_id>/pause/", views.pause_capsule, name="home-pause"),
    path("capsules/<str:capsule_id>/resume/", views.resume_capsule, name="home-resume"),
    path("capsules/<str:capsule_id>/destroy/", views.destroy_capsule, name="home-destroy"),
    path("capsules/<str:capsule_id>/recordings/<str:tag>/", playback.recording_play, name="recording-play"),
    path(
        "capsules/<str:capsule_id>/recordings/<str:tag>/cast", playback.recording_cast, name="recording-cast"
    ),
]
