"""Who a signed-in person's change is by, for the actions (capsules/actions.py): the event
streams' actor, the audit trail's actor and where the request came from. The admin's buttons and
the home page's forms both act as the person signed in."""

from typing import Any

from django.http import HttpRequest

from audit import trail
from capsules import live


def by_person(request: HttpRequest) -> dict[str, Any]:
    user = request.user
    return {
        "actor": live.Actor("user", str(user.pk), user.get_username()),
        "audit_actor": trail.user_actor(user),
        "where": trail.where_from_request(request),
    }
