"""The one client of host agents: pooled gRPC channels per host address, the shared host-agent
token on every call, one deadline, and one way of telling a caller why a call failed.

Synchronous code (actions, the admin, management commands) uses `stub_for`; the terminal
consumer, on daphne's event loop, uses `aio_stub_for`.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Mapping

import grpc
from django.conf import settings

from protos import hostagent_pb2_grpc as pb_grpc

METADATA_KEY = "authorization"
# What a caller is told when a host agent does not answer, by the API and the terminal alike.
HOST_UNREACHABLE = "sandbox host is not reachable"
HOST_TIMED_OUT = "sandbox host did not answer in time"
CHANNEL_OPTIONS = [
    # gRPC's default reconnect backoff grows to two minutes; an agent that restarts would then
    # look unreachable long after it is back. Calls fail fast (UNAVAILABLE) while the channel waits.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # A fixed HTTP/2 window (64 KiB) rather than one grown by bandwidth probing: with probing,
    # the window of a terminal stream whose reader paused (flow control) keeps growing, and the
    # receiving worker holds megabytes of output nobody reads (figures: docs/performance.md).
    ("grpc.http2.bdp_probe", 0),
    # Room for large output chunks, and keepalives on the long-lived terminal streams.
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
]

_channels: dict[str, grpc.Channel] = {}
_channels_lock = threading.Lock()
# A grpc.aio channel belongs to the loop that created it. Daphne has one loop; tests create one
# per test, so channels are kept per loop and die with it. The stub is kept with its channel:
# making one builds a callable for every method of the service, too costly per keystroke.
_aio_stubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, pb_grpc.HostAgentAsyncStub]] = (
    weakref.WeakKeyDictionary()
)


def call_metadata() -> tuple[tuple[str, str], ...]:
    token = settings.HOSTAGENT_TOKEN
    return ((METADATA_KEY, f"Bearer {token}"),) if token else ()


def rpc_timeout() -> float:
    """Deadline of one call to an agent, or of one op on a stream, in seconds."""
    return float(settings.HOSTAGENT_RPC_TIMEOUT)


def channel_for(address: str) -> grpc.Channel:
    """The process-wide channel to the agent at `address` (channels are thread-safe)."""
    with _channels_lock:
        channel = _channels.get(address)
        if channel is None:
            channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
            _channels[address] = channel
        return channel


def stub_for(address: str) -> pb_grpc.HostAgentStub:
    """A HostAgent stub on the pooled channel to `address`, for synchronous code."""
    return pb_grpc.HostAgentStub(channel_for(address))


def aio_stub_for(address: str) -> pb_grpc.HostAgentAsyncStub:
    """A grpc.aio HostAgent stub on this event loop's channel to `address`."""
    per_loop = _aio_stubs.setdefault(asyncio.get_running_loop(), {})
    stub = per_loop.get(address)
    if stub is None:
        stub = pb_grpc.HostAgentStub(grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS))
        per_loop[address] = stub
    return stub


def close_channels() -> None:
    """Close every pooled synchronous channel (at shutdown, or between tests)."""
    with _channels_lock:
        channels = list(_channels.values())
        _channels.clear()
    for channel in channels:
        channel.close()


def host_down(code: grpc.StatusCode | None) -> bool:
    """Whether a call failed because the agent did not answer, rather than refused."""
    return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def status_of(error: grpc.RpcError) -> tuple[grpc.StatusCode | None, str]:
    """The code and details of a failed call, sync or grpc.aio (None for an error with no status)."""
    if isinstance(error, grpc.Call | grpc.aio.AioRpcError):
        return error.code(), error.details() or ""
    return None, str(error)


def describe_status(code: grpc.StatusCode | None, details: str | None) -> str:
    """What a caller is told about a failed call to a host agent."""
    if code == grpc.StatusCode.UNAVAILABLE:
        return HOST_UNREACHABLE
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return HOST_TIMED_OUT
    return details or (code.name.lower() if code is not None else "error")


def describe(error: grpc.RpcError) -> str:
    return describe_status(*status_of(error))


# An agent's refusals that are the request's or the capsule's doing, as the API's error codes
# (capsules/api/errors.py gives each its HTTP status); any other failure is the agent's own.
REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_request",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.ALREADY_EXISTS: "conflict",
    grpc.StatusCode.FAILED_PRECONDITION: "invalid_state",
    # A limit of the agent's (too many processes): the caller can free room, as for a tag in use.
    grpc.StatusCode.RESOURCE_EXHAUSTED: "conflict",
}


def failure(
    error: grpc.RpcError, doing: str, refusals: Mapping[grpc.StatusCode, str] | None = None
) -> tuple[str, str]:
    """(error code, message) for a failed call: `host_unavailable` when the agent did not answer;
    for a status in `refusals` (REFUSALS, or a caller's own), the agent's own words under that
    code; else `agent_error` saying what the agent could not do (`doing`: "pause the capsule")."""
    code, detail = status_of(error)
    if host_down(code):
        return "host_unavailable", describe_status(code, detail)
    if refusals is not None and code is not None and code in refusals:
        return refusals[code], detail
    name = code.name if code is not None else "error"
    return "agent_error", f"the host agent could not {doing} ({name}: {detail})"
