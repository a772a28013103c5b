"""The browser terminal page: one capsule's shell in xterm.js, relayed over the PTY WebSocket.

`?tag=<tag>` opens that session, `&mode=observer` watches it, `?new=1` starts a new one instead of
the tab's last; `/shared/<token>/` watches the one session a share link grants, without a login.
"""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from capsules.services import find_capsule
from shares import links as share_links


def terminal_ws_path(capsule_id: str, *, via_admin: bool) -> str:
    """The WebSocket path the page connects to; the admin route serves staff outside the team."""
    if via_admin:
        return f"/v1/admin/capsules/{capsule_id}/pty"
    return f"/v1/capsules/{capsule_id}/pty"


@login_required
def capsule_terminal(request: HttpRequest, capsule_id: str) -> HttpResponse:
    capsule = find_capsule(capsule_id, user=request.user)
    via_admin = capsule is None and request.user.is_staff
    if via_admin:
        capsule = find_capsule(capsule_id, any_team=True)
    # Another team's capsule answers exactly like a missing one.
    if capsule is None:
        raise Http404("capsule not found")
    context = {
        "capsule_id": str(capsule.id),
        "capsule_status": capsule.status,
        "ws_path": terminal_ws_path(str(capsule.id), via_admin=via_admin),
        "via_admin": via_admin,
        # The server checks the tag; the page only passes it on.
        "tag": request.GET.get("tag", "")[:64],
        "mode": "observer" if request.GET.get("mode") == "observer" else "",
        "new": request.GET.get("new") == "1",
        "share_token": "",
    }
    return render(request, "pty/terminal.html", context)


@never_cache
def shared_terminal(request: HttpRequest, token: str) -> HttpResponse:
    """A share link's page: the terminal in observer mode, authenticated by the link alone."""
    link = share_links.find(token)
    reason = share_links.why_not(link)
    if reason is not None or link is None:
        status = 410 if link is not None else 404
        response = render(request, "pty/shared_gone.html", {"reason": reason}, status=status)
    else:
        context = {
            "capsule_id": link.sandbox_id,
            "capsule_status": link.sandbox.status,
            "ws_path": terminal_ws_path(link.sandbox_id, via_admin=False),
            "via_admin": False,
            "tag": link.tag,
            "mode": "observer",
            "new": False,
            "share_token": token,
        }
        response = render(request, "pty/terminal.html", context)
    # The token is in this page's address: no other site learns it from a Referer.
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex"
    return response
