"""The browser terminal page: one capsule's shell in xterm.js, relayed over the PTY WebSocket."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from capsules.services import find_capsule


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
    }
    return render(request, "pty/terminal.html", context)
