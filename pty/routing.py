"""WebSocket routes, served both at the root and under /api as the public deployment does.

Any other path is refused with 404, instead of the ValueError (a 500 and a logged traceback)
that Channels' URLRouter raises for a path no route matches.
"""

from typing import Any

from django.urls import re_path

from wrenn.denial import refuse

from .consumers import AdminPtyConsumer, PtyConsumer
from .processes import ExecStreamConsumer, ProcessStreamConsumer

NO_ROUTE = "no WebSocket route for this path"


async def no_route(scope: dict[str, Any], receive: Any, send: Any) -> None:
    message = await receive()
    if message["type"] == "websocket.connect":
        await refuse(scope, send, 404, NO_ROUTE)


websocket_urlpatterns = [
    re_path(r"^(?:api/)?v1/capsules/(?P<capsule_id>[^/]+)/pty/?$", PtyConsumer.as_asgi()),
    re_path(r"^(?:api/)?v1/admin/capsules/(?P<capsule_id>[^/]+)/pty/?$", AdminPtyConsumer.as_asgi()),
    re_path(r"^(?:api/)?v1/capsules/(?P<capsule_id>[^/]+)/exec/stream/?$", ExecStreamConsumer.as_asgi()),
    re_path(
        r"^(?:api/)?v1/capsules/(?P<capsule_id>[^/]+)/processes/(?P<selector>[^/]+)/stream/?$",
        ProcessStreamConsumer.as_asgi(),
    ),
    # Last: every other path.
    re_path(r"^", no_route),  # type: ignore[arg-type]  # an ASGI application, as URLRouter takes
]
