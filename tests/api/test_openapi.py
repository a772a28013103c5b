"""The OpenAPI document: served without credentials at both prefixes, valid OpenAPI 3.1 whose schemas
are valid JSON Schema 2020-12, and complete: every API route, every security scheme, every error."""

from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.validation import validate_schema
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # no type hints
from referencing.exceptions import Unresolvable

from tests.api.contract import DOCUMENT_URI, Contract, ContractClient

METHODS = {"get", "post", "put", "patch", "delete"}


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def walk(node: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    yield pointer, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{pointer}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{pointer}/{index}")


def schemas(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every component schema and every schema of a request or response body."""
    for name, schema in document["components"]["schemas"].items():
        yield f"components/schemas/{name}", schema
    for path, method, operation in operations(document):
        bodies = [operation.get("requestBody", {}), *operation["responses"].values()]
        for body in bodies:
            for media_type, content in body.get("content", {}).items():
                yield f"{method} {path} {media_type}", content["schema"]


@pytest.mark.parametrize("path", ["/v1/openapi.json", "/api/v1/openapi.json"])
def test_document_is_served_without_credentials(
    client: ContractClient, openapi: dict[str, Any], path: str
) -> None:
    response = client.get(path, HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == openapi


def test_document_is_valid_openapi_3_1(openapi: dict[str, Any]) -> None:
    assert openapi["openapi"] == "3.1.0"
    validate_schema(openapi)


def test_every_schema_is_valid_json_schema_2020_12(openapi: dict[str, Any]) -> None:
    for _, schema in schemas(openapi):
        Draft202012Validator.check_schema(schema)


def test_every_reference_resolves(openapi: dict[str, Any], contract: Contract) -> None:
    resolver = contract.registry.resolver(DOCUMENT_URI)
    refs = [node["$ref"] for _, node in walk(openapi) if isinstance(node, dict) and "$ref" in node]
    assert refs
    for ref in refs:
        try:
            resolver.lookup(ref)
        except Unresolvable as exc:  # pragma: no cover - the message is the point
            raise AssertionError(f"{ref} does not resolve") from exc


def test_operation_ids_are_unique(openapi: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(openapi)]
    assert len(ids) == len(set(ids))


def api_routes(resolver: URLResolver, prefix: str = "") -> Iterator[str]:
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from api_routes(pattern, route)
        elif isinstance(pattern, URLPattern) and route.startswith("v1/"):
            yield route


def test_every_api_route_is_documented(openapi: dict[str, Any]) -> None:
    routes = {route for route in api_routes(get_resolver()) if route not in {"v1/^", "v1/openapi.json"}}
    documented = {path.removeprefix("/") for path in openapi["paths"]}
    as_routes = {path.replace("{", "<").replace("}", ">") for path in documented}
    converters = {route.replace("<str:", "<").replace("<int:", "<") for route in routes}
    assert converters == as_routes


def test_security_schemes(openapi: dict[str, Any]) -> None:
    assert openapi["components"]["securitySchemes"] == {
        "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "BearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "HostTokenAuth": {"type": "http", "scheme": "bearer", "description": "A host agent's token, wrh_..."},
        "SessionCookieAuth": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
    }


PUBLIC = {"/v1/auth/login", "/v1/auth/refresh", "/v1/auth/token", "/v1/auth/token/refresh"}


def test_team_operations_take_either_credential_and_document_401(openapi: dict[str, Any]) -> None:
    for path, method, operation in operations(openapi):
        if path in PUBLIC or path.startswith("/v1/hosts/"):
            continue
        expected: list[dict[str, list[str]]] = [{"ApiKeyAuth": []}, {"BearerAuth": []}]
        if "/recordings" in path:  # the pages link to them: a signed-in member's cookie works too
            expected.append({"SessionCookieAuth": []})
        assert operation["security"] == expected, (method, path)
        assert "401" in operation["responses"], (method, path)


def test_public_operations_need_no_credentials(openapi: dict[str, Any]) -> None:
    for path in PUBLIC:
        assert "security" not in openapi["paths"][path]["post"]


def test_heartbeat_takes_the_host_token(openapi: dict[str, Any]) -> None:
    assert openapi["paths"]["/v1/hosts/heartbeat"]["post"]["security"] == [{"HostTokenAuth": []}]


def test_recording_chunks_take_the_host_token(openapi: dict[str, Any]) -> None:
    operation = openapi["paths"]["/v1/hosts/recordings/{capsule_id}/{tag}/{seq}"]["post"]
    assert operation["security"] == [{"HostTokenAuth": []}]


def test_every_operation_documents_its_errors_in_the_error_shape(openapi: dict[str, Any]) -> None:
    for path, method, operation in operations(openapi):
        assert "500" in operation["responses"], (method, path)
        if "{" in path:
            assert "404" in operation["responses"], (method, path)
        if "requestBody" in operation:
            assert "400" in operation["responses"], (method, path)
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": f"#/components/schemas/Error{status}"}, (method, path, status)


def test_error_components_name_the_exact_codes(openapi: dict[str, Any]) -> None:
    components = openapi["components"]["schemas"]
    codes = {
        name.removeprefix("Error").removesuffix("DetailCodeEnum"): schema["enum"]
        for name, schema in components.items()
        if name.endswith("DetailCodeEnum")
    }
    assert codes == {
        "400": ["invalid_request"],
        "401": ["unauthorized"],
        "403": ["forbidden", "quota_exceeded"],
        "404": ["not_found"],
        "409": ["invalid_state", "conflict"],
        "413": ["too_large"],
        "415": ["unsupported_media_type"],
        "429": ["rate_limited"],
        "500": ["internal_error"],
        "502": ["agent_error"],
        "503": ["host_unavailable"],
        "507": ["insufficient_storage"],
    }


def test_capsule_schema_lists_every_field(openapi: dict[str, Any]) -> None:
    capsule = openapi["components"]["schemas"]["Capsule"]
    fields = ["id", "status", "template", "vcpus", "memory_mb", "timeout_sec", "created_at", "started_at"]
    fields += ["last_active_at", "last_updated", "metadata", "disk_size_mb", "network", "events", "isolation"]
    assert list(capsule["properties"]) == fields
    assert sorted(capsule["required"]) == sorted(fields)
    assert capsule["additionalProperties"] is False
    for name in ("started_at", "last_active_at"):
        assert capsule["properties"][name]["type"] == ["string", "null"]
        assert capsule["properties"][name]["format"] == "date-time"


def test_create_body_is_optional_and_closed(openapi: dict[str, Any]) -> None:
    operation = openapi["paths"]["/v1/capsules"]["post"]
    assert not operation["requestBody"].get("required", False)
    request = openapi["components"]["schemas"]["CapsuleCreateRequest"]
    assert request["additionalProperties"] is False
    assert "required" not in request


def test_network_policy_bodies_are_optional_keys_and_closed(openapi: dict[str, Any]) -> None:
    request = openapi["components"]["schemas"]["NetworkPolicyRequest"]
    assert list(request["properties"]) == ["allow_internet", "allow_out", "deny_out"]
    assert "required" not in request
    assert request["additionalProperties"] is False
    assert request["properties"]["allow_out"]["maxItems"] == 64
    body = openapi["paths"]["/v1/capsules/{capsule_id}/network"]["put"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NetworkPolicyRequest"
    }
    shown = openapi["components"]["schemas"]["NetworkPolicy"]
    assert sorted(shown["required"]) == ["allow_internet", "allow_out", "deny_out"]


CAPSULE = {
    "id": "cl-0123456789abcdef0123",
    "status": "running",
    "template": "minimal",
    "vcpus": 1,
    "memory_mb": 512,
    "timeout_sec": 300,
    "created_at": "2026-01-01T00:00:00Z",
    "started_at": "2026-01-01T00:00:01.5+00:00",
    "last_active_at": None,
    "last_updated": "2026-01-01T00:00:01Z",
    "metadata": {"env": "ci"},
    "disk_size_mb": 1024,
    "network": {"allow_internet": True, "allow_out": ["203.0.113.0/24"], "deny_out": []},
    "events": [{"at": "2026-01-01T00:00:02Z", "kind": "oom_kill", "message": "the out-of-memory killer …"}],
    "isolation": {"network": {"on": True, "reason": ""}, "limits": {"on": False, "reason": "no cgroups"}},
}
CREATED = "/paths/~1v1~1capsules/post/responses/201/content/application~1json/schema"
CONFLICT = "/paths/~1v1~1capsules/post/responses/409/content/application~1json/schema"


def test_checker_accepts_a_capsule(contract: Contract) -> None:
    contract.validator(CREATED).validate(CAPSULE)


@pytest.mark.parametrize(
    "broken",
    [
        {**CAPSULE, "extra": 1},
        {key: value for key, value in CAPSULE.items() if key != "disk_size_mb"},
        {**CAPSULE, "created_at": "2026-01-01T00:00:00"},
        {**CAPSULE, "status": "sleeping"},
        {**CAPSULE, "metadata": {"env": 1}},
        {**CAPSULE, "vcpus": "1"},
        {**CAPSULE, "network": {"allow_internet": True, "allow_out": []}},
        {**CAPSULE, "events": [{"at": "2026-01-01T00:00:02Z", "kind": "oom_kill"}]},
        {**CAPSULE, "isolation": {"network": {"on": "yes", "reason": ""}}},
    ],
)
def test_checker_refuses_a_capsule_off_the_document(contract: Contract, broken: dict[str, Any]) -> None:
    assert not contract.validator(CREATED).is_valid(broken)


def test_checker_knows_which_codes_a_status_carries(contract: Contract) -> None:
    validator = contract.validator(CONFLICT)
    assert validator.is_valid(
        {"error": {"code": "invalid_state", "message": "capsule is paused; cannot pause"}}
    )
    assert not validator.is_valid({"error": {"code": "not_found", "message": "capsule x not found"}})


@pytest.mark.parametrize(
    "path", ["/v1/auth/login", "/v1/auth/token", "/v1/auth/refresh", "/v1/auth/token/refresh"]
)
def test_sign_in_limits_document_retry_after(openapi: dict[str, Any], path: str) -> None:
    limited = openapi["paths"][path]["post"]["responses"]["429"]
    assert limited["headers"] == {
        "Retry-After": {
            "schema": {"type": "integer"},
            "description": "Seconds to wait before the next attempt.",
        }
    }
