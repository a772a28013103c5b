"""Errors the agent reports to its callers, each carrying the gRPC status it maps to."""

from __future__ import annotations

import grpc

from protos import rules


class AgentError(Exception):
    """A request failed in a way the caller should see with a specific status and message."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(AgentError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(AgentError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(AgentError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(AgentError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(AgentError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(AgentError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def validate_sandbox_id(sandbox_id: str) -> str:
    """The id, or INVALID_ARGUMENT saying what a sandbox id may be."""
    if not rules.is_sandbox_id(sandbox_id):
        raise InvalidArgument(rules.bad_sandbox_id(sandbox_id))
    return sandbox_id


def validate_tag(tag: str) -> str:
    """A terminal's or a process's tag, or INVALID_ARGUMENT saying what a tag may be."""
    if not tag:
        raise InvalidArgument("tag is required")
    if not rules.is_tag(tag):
        raise InvalidArgument(rules.bad_tag(tag))
    return tag
