"""Which hosts are previews, read strictly: one port, one spelling."""

from __future__ import annotations

import pytest

from previews.hosts import BadPreviewHost, PreviewTarget, parse_port, preview_url, target_of

CAPSULE = "cl-0123456789abcdef0123"


@pytest.mark.parametrize(
    ("host", "domain", "expected"),
    [
        (
            f"3000-{CAPSULE}.localhost:8000",
            "localhost",
            PreviewTarget(3000, CAPSULE, f"3000-{CAPSULE}.localhost:8000"),
        ),
        (f"3000-{CAPSULE}.localhost", "localhost", PreviewTarget(3000, CAPSULE, f"3000-{CAPSULE}.localhost")),
        (
            f"1-{CAPSULE}.Preview.Example.com",
            "preview.example.com",
            PreviewTarget(1, CAPSULE, f"1-{CAPSULE}.preview.example.com"),
        ),
        (
            f"65535-{CAPSULE}.localhost:8000",
            "localhost:8000",
            PreviewTarget(65535, CAPSULE, f"65535-{CAPSULE}.localhost:8000"),
        ),
    ],
)
def test_a_preview_host_names_its_port_and_capsule(host: str, domain: str, expected: PreviewTarget) -> None:
    assert target_of(host, domain) == expected


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("localhost:8000", "localhost"),  # the app itself
        ("127.0.0.1:8000", "localhost"),
        (f"3000-{CAPSULE}.example.com", "localhost"),
        (f"3000-{CAPSULE}.localhost:9000", "localhost:8000"),  # another port than the domain's
        (f"3000-{CAPSULE}.evil-localhost", "localhost"),
        (f"3000-{CAPSULE}.a.localhost", "localhost"),  # two labels below the domain
    ],
)
def test_other_hosts_go_to_the_app(host: str, domain: str) -> None:
    assert target_of(host, domain) is None


@pytest.mark.parametrize(
    ("label", "message"),
    [
        (f"03000-{CAPSULE}", "invalid preview port '03000'"),
        (f"0-{CAPSULE}", "invalid preview port '0'"),
        (f"65536-{CAPSULE}", "invalid preview port '65536'"),
        (f"+3000-{CAPSULE}", "invalid preview port '+3000'"),
        (f"3000x-{CAPSULE}", "invalid preview port '3000x'"),
        ("3000", "preview host '3000' must be <port>-<capsule id>"),
        ("3000-", "invalid capsule id ''"),
        ("3000-_x", "invalid capsule id '_x'"),
    ],
)
def test_a_malformed_preview_host_is_refused_with_why(label: str, message: str) -> None:
    with pytest.raises(BadPreviewHost) as refused:
        target_of(f"{label}.localhost:8000", "localhost")
    assert message in str(refused.value)


@pytest.mark.parametrize(("text", "port"), [("1", 1), ("3000", 3000), ("65535", 65535)])
def test_canonical_ports(text: str, port: int) -> None:
    assert parse_port(text) == port


@pytest.mark.parametrize(
    "text", ["", "0", "00", "03000", "65536", "99999", "\uff11\uff12", "3 000", "-1", "3e3"]
)
def test_non_canonical_ports(text: str) -> None:
    assert parse_port(text) is None


def test_a_preview_url_takes_the_api_port_when_the_domain_has_none(settings: object) -> None:
    settings.WRENN_PREVIEW_DOMAIN = "localhost"  # type: ignore[attr-defined]
    assert preview_url(3000, CAPSULE, "http", "127.0.0.1:8000") == f"http://3000-{CAPSULE}.localhost:8000/"
    assert preview_url(3000, CAPSULE, "https", "app.example.com") == f"https://3000-{CAPSULE}.localhost/"
    assert preview_url(3000, CAPSULE, "https", "[::1]:443") == f"https://3000-{CAPSULE}.localhost/"
    assert preview_url(3000, CAPSULE, "http", "[::1]:8000") == f"http://3000-{CAPSULE}.localhost:8000/"
    assert preview_url(3000, CAPSULE, "http", "[::1]") == f"http://3000-{CAPSULE}.localhost/"
    settings.WRENN_PREVIEW_DOMAIN = "preview.example.com:8443"  # type: ignore[attr-defined]
    url = preview_url(3000, CAPSULE, "https", "localhost:8000")
    assert url == f"https://3000-{CAPSULE}.preview.example.com:8443/"
