from django.apps import AppConfig


class CapsulesConfig(AppConfig):
    name = "capsules"
    verbose_name = "Capsules"
    default_auto_field = "django.db.models.BigAutoField"
