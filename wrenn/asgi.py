"""ASGI entry point: Django for HTTP (static files included), Channels for the terminal sockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wrenn.settings")
# Django must be set up before anything imports models (the consumers do).
django_http = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from pty.auth import TerminalAuthMiddleware  # noqa: E402
from pty.routing import websocket_urlpatterns  # noqa: E402
from wrenn import diagnostics  # noqa: E402
from wrenn.denial import DenialMiddleware  # noqa: E402
from wrenn.flow import FlowMiddleware  # noqa: E402
from wrenn.transfers import Transfers, stop_form_parsing  # noqa: E402

diagnostics.install(settings.DIAGNOSTICS_FILE)
stop_form_parsing()

# Transfers outermost, and synchronous: it must take an upload's body from daphne during the
# call that creates the application, before daphne queues it all in memory (wrenn/transfers.py).
application = Transfers(
    ProtocolTypeRouter(
        {
            # Static files (xterm.js and the terminal page's own) are served by the
            # app itself, so a bare `daphne` needs no web server in front of it.
            "http": ASGIStaticFilesHandler(django_http),
            # Not AllowedHostsOriginValidator: SDK clients send no Origin and must be
            # let in. The cross-site risk is the session cookie, and pty.auth trusts
            # it only for same-site origins.
            # FlowMiddleware first, then DenialMiddleware: both need the `send` daphne made (see
            # wrenn/flow.py, wrenn/denial.py), and the second hands on a `send` of its own.
            "websocket": FlowMiddleware(
                DenialMiddleware(
                    AuthMiddlewareStack(TerminalAuthMiddleware(URLRouter(websocket_urlpatterns)))
                )
            ),
        }
    )
)
