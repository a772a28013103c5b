"""The admin's login page, behind the same sign-in limits as the API's (capsules/ratelimit.py).

A wrong password is audited where Django refuses it (audit/signins.py); a right password of an
account that is not staff is refused by the admin's form, and audited here.
"""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from audit import signins, trail
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
    response = admin.site.login(request)
    form = (getattr(response, "context_data", None) or {}).get("form")
    user = getattr(form, "user_cache", None)
    # The form shown again after a POST: refused, though the password was right.
    if request.method == "POST" and user is not None and response.status_code == 200:
        signins.auth_failed(
            request,
            "not a staff account",
            signins.PASSWORD,
            actor=trail.user_actor(user),
            username=user.get_username(),
        )
    return response
