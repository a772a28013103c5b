"""The browser terminal page: one capsule's shell in xterm.js, relayed over the PTY WebSocket."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from capsules.services import find_sandbox, is_member


def terminal_ws_path(capsule_id: str, *, via_admin: bool) -> str:
    """The WebSocket path the page connects to; the admin route serves staff outside the team."""
    if via_admin:
        return f"/v1/admin/capsules/{capsule_id}/pty"
    return f"/v1/capsules/{capsule_id}/pty"


@login_required
def capsule_terminal(request: HttpRequest, capsule_id: str) -> HttpResponse:
    capsule = find_sandbox(capsule_id, None)
    if capsule is None:
        raise Http404("capsule not found")
    member = is_member(request.user, capsule.team_id)
    # Another team's capsule answers exactly like a missing one.
    if not member and not request.user.is_staff:
        raise Http404("capsule not found")
    context = {
        "capsule_id": str(capsule.id),
        "capsule_status": capsule.status,
        "ws_path": terminal_ws_path(str(capsule.id), via_admin=not member),
    }
    return render(request, "pty/terminal.html", context)
