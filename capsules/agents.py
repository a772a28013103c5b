"""Calling host agents from synchronous code: one pooled gRPC channel per host address, the shared
host-agent token on every call, and the configured deadline."""

import threading
from typing import Any

import grpc
from django.conf import settings

from protos import hostagent_pb2_grpc as pb_grpc

METADATA_KEY = "authorization"
# What a caller is told when a host agent does not answer, by the API and the terminal alike.
HOST_UNREACHABLE = "sandbox host is not reachable"
# gRPC's default reconnect backoff grows to two minutes; an agent that restarts would then look
# unreachable long after it is back. Calls fail fast (UNAVAILABLE) while the channel waits.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # A fixed HTTP/2 window (64 KiB) rather than one grown by bandwidth probing: with probing,
    # the window of a terminal stream whose reader paused (flow control) keeps growing, and the
    # receiving worker holds megabytes of output nobody reads (figures: docs/performance.md).
    ("grpc.http2.bdp_probe", 0),
]

_channels: dict[str, grpc.Channel] = {}
_channels_lock = threading.Lock()


def call_metadata() -> tuple[tuple[str, str], ...]:
    token = settings.HOSTAGENT_TOKEN
    return ((METADATA_KEY, f"Bearer {token}"),) if token else ()


def rpc_timeout() -> float:
    """Deadline of one unary call to an agent, in seconds."""
    return float(settings.HOSTAGENT_RPC_TIMEOUT)


def channel_for(address: str) -> grpc.Channel:
    """The process-wide channel to the agent at `address` (channels are thread-safe)."""
    with _channels_lock:
        channel = _channels.get(address)
        if channel is None:
            channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
            _channels[address] = channel
        return channel


def stub_for(address: str) -> Any:
    """A HostAgent stub on the pooled channel to `address`."""
    return pb_grpc.HostAgentStub(channel_for(address))


def close_channels() -> None:
    """Close every pooled channel (at shutdown, or between tests)."""
    with _channels_lock:
        channels = list(_channels.values())
        _channels.clear()
    for channel in channels:
        channel.close()
