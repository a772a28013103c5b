"""The OpenAPI document as a contract: every response a test receives is checked against it.

`Contract.check` finds the documented operation for a response and validates the
body against that operation's schema for the status, with `$ref`s resolved
through a `referencing` registry holding the whole document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# jsonschema ships no type hints and types-jsonschema is not in requirements.txt.
from jsonschema import Draft202012Validator, FormatChecker  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from rest_framework.test import APIClient

DOCUMENT_URI = "urn:wrenn:openapi"
SCHEMA_PATH = "/v1/openapi.json"
API_PREFIX = "/api"
# Answered by the catch-all route or by DRF for a method the path does not have; no operation documents them.
GENERIC_ERROR = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}

format_checker = FormatChecker()


@format_checker.checks("date-time", raises=ValueError)
def is_aware_datetime(value: object) -> bool:
    """ISO 8601 with a time zone (jsonschema's own check needs a package this project does not install)."""
    if not isinstance(value, str):
        return True
    return datetime.fromisoformat(value).tzinfo is not None


def escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def path_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")


@dataclass
class Contract:
    document: dict[str, Any]
    registry: Registry[Any] = field(init=False)
    routes: list[tuple[re.Pattern[str], str]] = field(init=False)
    # (path template, method, status) of every response checked so far.
    seen: set[tuple[str, str, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        resource = Resource.from_contents(self.document, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(DOCUMENT_URI, resource)
        self.routes = [(path_regex(template), template) for template in self.document["paths"]]

    def validator(self, pointer: str) -> Draft202012Validator:
        return Draft202012Validator(
            {"$ref": f"{DOCUMENT_URI}#{pointer}"}, registry=self.registry, format_checker=format_checker
        )

    def template_for(self, path: str) -> str | None:
        if path.startswith(API_PREFIX + "/v1/"):
            path = path.removeprefix(API_PREFIX)
        # As OpenAPI matches: a concrete segment before a template one (`/previews/ports` is not
        # the link `{link_id}`), so the match with the fewest parameters wins.
        matches = [template for regex, template in self.routes if regex.match(path)]
        return min(matches, key=lambda template: template.count("{"), default=None)

    def check(self, response: Any) -> None:
        path = response.request["PATH_INFO"]
        method = response.request["REQUEST_METHOD"].lower()
        if path.endswith("/openapi.json"):
            return
        template = self.template_for(path)
        operation = self.document["paths"][template].get(method) if template else None
        if operation is None:
            # An unknown route (404) or a method the route does not have (405): still the error body.
            assert response.status_code in (404, 405), (path, method, response.status_code)
            Draft202012Validator(GENERIC_ERROR).validate(response.json())
            return
        assert template is not None
        documented = operation["responses"]
        status = str(response.status_code)
        assert status in documented, (
            f"{method.upper()} {template} answered {status}, documented: {sorted(documented)}: "
            f"{response.content[:300]!r}"
        )
        self.seen.add((template, method, response.status_code))
        if "content" not in documented[status]:
            assert response.content == b"", response.content
            return
        if getattr(response, "streaming", False):
            # A streamed body (a download): its media type is one the operation documents.
            media_type = response["Content-Type"].split(";")[0]
            assert media_type in documented[status]["content"], (template, media_type)
            return
        assert response["Content-Type"] == "application/json", response["Content-Type"]
        pointer = "/".join(
            [
                "",
                "paths",
                escape(template),
                method,
                "responses",
                status,
                "content",
                escape("application/json"),
            ]
        )
        self.validator(pointer + "/schema").validate(response.json())

    def statuses(self, template: str, method: str) -> set[int]:
        return {int(status) for status in self.document["paths"][template][method]["responses"]}

    def seen_statuses(self, template: str, method: str) -> set[int]:
        return {status for path, verb, status in self.seen if (path, verb) == (template, method)}


class ContractClient(APIClient):
    """An APIClient whose every response is checked against the OpenAPI document."""

    def __init__(self, contract: Contract, **defaults: Any) -> None:
        super().__init__(**defaults)
        self.contract = contract

    def request(self, **kwargs: Any) -> Any:
        response = super().request(**kwargs)
        self.contract.check(response)
        return response
