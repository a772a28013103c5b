"""The admin's login page, behind the same sign-in limits as the API's (capsules/ratelimit.py)."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from capsules.ratelimit import RateLimited, check_sign_in


def admin_login(request: HttpRequest) -> HttpResponse:
    """`admin.site.login`, except that a password attempt past its rate answers 429 and is not tried."""
    if request.method == "POST":
        try:
            check_sign_in(request, username=request.POST.get("username") or None)
        except RateLimited as exc:
            response = HttpResponse(f"{exc.message}\n", status=429, content_type="text/plain; charset=utf-8")
            response["Retry-After"] = str(exc.retry_after)
            return response
    return admin.site.login(request)
