"""ASGI entry point: Django for HTTP (static files included), Channels for the terminal sockets,
and in front of both the preview proxy, which answers the hosts of preview URLs itself."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wrenn.settings")
# Django must be set up before anything imports models (the consumers do).
django_http = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from previews.middleware import PreviewMiddleware, for_previews  # noqa: E402
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
# Requests for previews pass it untouched: their bodies are the capsule's, whatever their path.
application = Transfers(
    ProtocolTypeRouter(
        {
            # Static files (xterm.js and the terminal page's own) are served by the
            # app itself, so a bare `daphne` needs no web server in front of it.
            # Previews first (previews/middleware.py): their hosts never reach the app.
            "http": PreviewMiddleware(ASGIStaticFilesHandler(django_http)),
            # Not AllowedHostsOriginValidator: SDK clients send no Origin and must be
            # let in. The cross-site risk is the session cookie, and pty.auth trusts
            # it only for same-site origins.
            # FlowMiddleware first, then DenialMiddleware: both need the `send` daphne made (see
            # wrenn/flow.py, wrenn/denial.py), and the second hands on a `send` of its own.
            # Previews behind them, for the send window and the refusals with a status.
            "websocket": FlowMiddleware(
                DenialMiddleware(
                    PreviewMiddleware(
                        AuthMiddlewareStack(TerminalAuthMiddleware(URLRouter(websocket_urlpatterns)))
                    )
                )
            ),
        }
    ),
    passes=for_previews,
)
