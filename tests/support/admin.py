"""Driving the admin as a person does: a staff user with given permissions, and a change form posted
back with only the fields the test changes."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client


def staff_client_with(username: str, *permissions: str) -> Client:
    """Signed in as a staff user (not a superuser) holding exactly these `capsules` permissions."""
    user = get_user_model().objects.create_user(username=username, password="x", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="capsules", codename__in=permissions)
    )
    client = Client()
    client.force_login(user)
    return client


def _bound_values(form: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in form.fields:
        bound = form[name]
        value = bound.value()
        if value is False or (value is None and bound.widget_type == "checkbox"):
            continue  # an unticked box is left out of a browser's post
        values[bound.html_name] = "on" if value is True else ("" if value is None else value)
    return values


def change_form_data(page: Any, **changes: Any) -> dict[str, Any]:
    """What the change page `page` (a test client response) posts when saved, with `changes` made:
    the object's fields as shown, and each inline's management form and rows unchanged."""
    data = _bound_values(page.context["adminform"].form)
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        data.update(_bound_values(formset.management_form))
        for form in formset.forms:
            data.update(_bound_values(form))
    data.update(changes)
    return data
