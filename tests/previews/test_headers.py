"""What crosses the proxy: the platform's credentials and cookies never reach a capsule, and a
capsule's cookies never reach beyond its own preview host; cookies count only from the preview's
own pages."""

from __future__ import annotations

from typing import Any

import h11
import pytest

from previews.access import cookies_count, headers_of
from previews.hosts import PreviewTarget
from previews.http import filter_cookie_header, forwarded_headers, query_without_token, response_headers

TARGET = PreviewTarget(3000, "cl-1", "3000-cl-1.localhost:8000")


def scope(kind: str = "http", method: str = "GET", **headers: str) -> dict[str, Any]:
    return {
        "type": kind,
        "method": method,
        "scheme": "http" if kind == "http" else "ws",
        "headers": [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("192.0.2.7", 5000),
        "query_string": b"",
    }


def test_the_platforms_cookies_are_taken_out() -> None:
    cookie = "a=1; sessionid=s; csrftoken=c; wrenn_preview=t; __Host-wrenn_preview=u; b=2"
    assert filter_cookie_header(cookie) == "a=1; b=2"


def test_credentials_and_hop_by_hop_headers_stay_behind() -> None:
    forwarded = dict(
        forwarded_headers(
            scope(
                x_api_key="wrn_x",
                authorization="Bearer abc",
                cookie="sessionid=s",
                connection="keep-alive, x-secret",
                x_secret="1",
                accept="*/*",
            ),
            secure=False,
        )
    )
    assert forwarded == {
        b"accept": b"*/*",
        b"x-forwarded-for": b"192.0.2.7",
        b"x-forwarded-proto": b"http",
        b"connection": b"close",
    }


def test_another_authorization_scheme_is_the_apps_own() -> None:
    assert (b"authorization", b"Basic dTpw") in forwarded_headers(
        scope(authorization="Basic dTpw"), secure=True
    )


def test_the_token_parameter_is_taken_out_of_the_query_and_the_rest_kept_as_sent() -> None:
    request = {"query_string": b"a=%2F+x&wrenn_preview_token=wpt_1&b=&wrenn%5Fpreview%5Ftoken=2"}
    assert query_without_token(request) == "a=%2F+x&b="


def test_only_host_only_cookies_of_the_capsules_own_come_back() -> None:
    response = h11.Response(
        status_code=200,
        headers=[
            ("set-cookie", "own=1; Path=/"),
            ("set-cookie", "wide=1; Path=/; domain=localhost"),
            ("set-cookie", "sessionid=planted"),
            ("set-cookie", "__Host-wrenn_preview=x; Secure; Path=/"),
            ("transfer-encoding", "chunked"),
            ("x-app", "1"),
        ],
    )
    assert response_headers(response) == [(b"set-cookie", b"own=1; Path=/"), (b"x-app", b"1")]


@pytest.mark.parametrize(
    ("request_scope", "counts"),
    [
        (scope(), True),  # no browser metadata, no Origin: a script of the visitor's own
        (scope(sec_fetch_site="same-origin", sec_fetch_mode="cors", method="POST"), True),
        (scope(sec_fetch_site="none", sec_fetch_mode="navigate"), True),
        (scope(sec_fetch_site="cross-site", sec_fetch_mode="navigate"), True),  # a link followed
        (scope(sec_fetch_site="cross-site", sec_fetch_mode="navigate", method="POST"), False),
        (scope(sec_fetch_site="same-site", sec_fetch_mode="navigate", sec_fetch_dest="iframe"), False),
        (scope(sec_fetch_site="same-origin", sec_fetch_mode="navigate", sec_fetch_dest="iframe"), True),
        (scope(sec_fetch_site="same-site", sec_fetch_mode="cors"), False),  # another preview's script
        (scope(sec_fetch_site="same-site", sec_fetch_mode="no-cors"), False),
        (scope(origin="http://3000-cl-1.localhost:8000"), True),
        (scope(origin="http://3000-cl-2.localhost:8000", method="POST"), False),
        (scope("websocket", origin="http://3000-cl-1.localhost:8000"), True),
        (scope("websocket", origin="http://4000-cl-1.localhost:8000"), False),
        (scope("websocket"), False),  # a WebSocket without Origin is no browser page of its own
    ],
)
def test_cookies_count_only_from_the_previews_own_pages(request_scope: dict[str, Any], counts: bool) -> None:
    assert cookies_count(request_scope, headers_of(request_scope), TARGET) is counts
