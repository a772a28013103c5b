"""Signing in and out for people, staff or not (the admin's login page admits staff only).

Password attempts count against the same limits as the API's and the admin's
(capsules/ratelimit.py); one past its rate answers 429 with Retry-After and is not tried.
"""

from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponseBase
from django.shortcuts import render

from capsules.ratelimit import RateLimited, check_sign_in

TOO_MANY = 429


class LoginView(auth_views.LoginView):
    template_name = "home/login.html"
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    # Django's LogoutView takes POST only, so a link from another site cannot sign anybody out.
    next_page = "login"


def login(request: HttpRequest) -> HttpResponseBase:
    if request.method == "POST":
        try:
            check_sign_in(request, username=request.POST.get("username") or None)
        except RateLimited as exc:
            form = AuthenticationForm(request)
            context = {"form": form, "refusal": exc.message, "next": request.POST.get("next", "")}
            response = render(request, LoginView.template_name, context, status=TOO_MANY)
            response["Retry-After"] = str(exc.retry_after)
            return response
    return LoginView.as_view()(request)


logout = LogoutView.as_view()
