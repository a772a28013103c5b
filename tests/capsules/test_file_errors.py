"""How a host agent's refusal of a file call reaches the API: each status to its error code."""

from __future__ import annotations

import grpc
import pytest

from capsules.files import failure


class Refusal(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A failed call as grpc raises it: its code and details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "details", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "path is required", "invalid_request"),
        (grpc.StatusCode.NOT_FOUND, "/root/x: No such file or directory", "not_found"),
        (grpc.StatusCode.ALREADY_EXISTS, "/root/x: already exists (a directory)", "conflict"),
        (grpc.StatusCode.PERMISSION_DENIED, "/usr/x: Read-only file system", "forbidden"),
        (grpc.StatusCode.FAILED_PRECONDITION, "/root: Is a directory", "invalid_request"),
        (grpc.StatusCode.FAILED_PRECONDITION, "sandbox cap-1 is paused", "invalid_state"),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "/root/x: no space left on the capsule's disk",
            "insufficient_storage",
        ),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "/: more than 10000 entries", "invalid_request"),
        (grpc.StatusCode.UNAVAILABLE, "connection refused", "host_unavailable"),
        (grpc.StatusCode.INTERNAL, "the capsule's file helper broke its protocol", "agent_error"),
    ],
)
def test_each_refusal_has_its_code_and_keeps_the_agents_words(
    code: grpc.StatusCode, details: str, expected: str
) -> None:
    error = failure(Refusal(code, details))
    assert error.code == expected
    if expected != "host_unavailable":
        assert details in error.message
