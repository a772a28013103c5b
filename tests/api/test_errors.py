"""Every answer under /v1/ and /api/v1/ is JSON in one error shape: unknown routes, wrong methods,
malformed bodies and crashes included."""

from typing import Any

import pytest
from django.test import RequestFactory

from capsules.actions import ActionError
from capsules.api import errors
from capsules.models import Sandbox
from tests.api import error
from tests.api.contract import ContractClient
from wrenn import urls


@pytest.mark.parametrize("path", ["/v1/nope", "/api/v1/nope", "/v1/capsules/x/y/z", "/v1/"])
def test_unknown_route_is_a_json_404(client: ContractClient, db: None, path: str) -> None:
    response = client.post(path, {}, format="json")
    assert response.status_code == 404
    assert response.json() == error("not_found", f"unknown endpoint {path}")


def test_unknown_route_is_json_even_with_debug(client: ContractClient, db: None, settings: Any) -> None:
    settings.DEBUG = True
    response = client.get("/v1/nope")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


def test_trailing_slash_is_not_redirected(client: ContractClient, db: None) -> None:
    response = client.get("/v1/capsules/")
    assert response.status_code == 404
    assert response.json() == error("not_found", "unknown endpoint /v1/capsules/")


def test_method_not_allowed(key_client: ContractClient) -> None:
    response = key_client.put("/v1/capsules", {}, format="json")
    assert response.status_code == 405
    assert response.json() == error("method_not_allowed", 'Method "PUT" not allowed.')


def test_malformed_json(key_client: ContractClient) -> None:
    response = key_client.post("/v1/capsules", "{not json", content_type="application/json")
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["message"].startswith("JSON parse error")


def test_unsupported_media_type(key_client: ContractClient) -> None:
    response = key_client.post("/v1/capsules", "vcpus=2", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response.json() == error(
        "unsupported_media_type", 'Unsupported media type "application/x-www-form-urlencoded" in request.'
    )


def test_unhandled_exception_is_a_logged_500(
    key_client: ContractClient, capsule: Sandbox, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    def explode(sandbox_id: str) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("capsules.actions.record_activity", explode)
    response = key_client.get(f"/v1/capsules/{capsule.id}")
    assert response.status_code == 500
    assert response.json() == error("internal_error", "internal server error")
    assert "disk on fire" not in response.content.decode()
    assert any(record.exc_info and "disk on fire" in str(record.exc_info[1]) for record in caplog.records)


def test_handler404_answers_json_for_api_paths() -> None:
    response = errors.page_not_found(RequestFactory().get("/api/v1/x"), Exception())
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


def test_handler404_answers_html_elsewhere(db: None) -> None:
    response = errors.page_not_found(RequestFactory().get("/elsewhere"), Exception())
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_handler500_answers_json_for_api_paths() -> None:
    response = errors.server_error(RequestFactory().get("/v1/capsules"))
    assert response.status_code == 500
    assert response.content == b'{"error": {"code": "internal_error", "message": "internal server error"}}'


def test_handler500_answers_html_elsewhere() -> None:
    response = errors.server_error(RequestFactory().get("/elsewhere"))
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")


def test_handlers_are_installed() -> None:
    assert urls.handler404 == "capsules.api.errors.page_not_found"
    assert urls.handler500 == "capsules.api.errors.server_error"


@pytest.mark.parametrize(
    ("code", "http_status"),
    [
        ("invalid_request", 400),
        ("not_found", 404),
        ("invalid_state", 409),
        ("conflict", 409),
        ("agent_error", 502),
        ("host_unavailable", 503),
    ],
)
def test_an_action_refusal_answers_the_status_of_its_code(code: str, http_status: int) -> None:
    response = errors.api_exception_handler(ActionError(code, "refused"), {})
    assert (response.status_code, response.data) == (http_status, error(code, "refused"))


def test_every_action_code_has_an_http_status() -> None:
    assert set(errors.ACTION_STATUS) >= ActionError.CODES
