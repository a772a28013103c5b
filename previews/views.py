"""The browser's way into a preview from the app: `/capsules/<id>/preview/<port>/`.

A signed-in member of the capsule's team is sent on to the preview with a fresh link, which the
preview host trades for a cookie of its own. The app's session cookie stays on the app's host
(it does not reach `*.localhost` or another domain), so this is how `make run` opens a preview in
the browser; the link lasts WRENN_PREVIEW_LINK_DEFAULT_SECONDS.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect

from capsules.services import find_capsule
from previews import links
from previews.access import TOKEN_PARAM
from previews.hosts import parse_port, preview_url


@login_required
def open_preview(request: HttpRequest, capsule_id: str, port: str) -> HttpResponse:
    capsule = find_capsule(capsule_id, user=request.user)
    number = parse_port(port)
    # Another team's capsule answers exactly like a missing one.
    if capsule is None:
        raise Http404("capsule not found")
    if number is None:
        raise Http404(f"{port[:12]!r} is not a port: write 1 to 65535 in digits, with no leading zero")
    seconds = min(settings.WRENN_PREVIEW_LINK_DEFAULT_SECONDS, links.max_link_seconds())
    issued = links.issue_link(capsule, number, seconds, f"user:{request.user.get_username()}")
    scheme = "https" if request.is_secure() else "http"
    url = preview_url(number, capsule.pk, scheme, request.get_host())
    response = HttpResponseRedirect(f"{url}?{TOKEN_PARAM}={issued.token}")
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "no-store"
    return response
