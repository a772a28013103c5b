"""gRPC access to host agents: one pooled channel per host address and event loop."""

from __future__ import annotations

import asyncio
import weakref

import grpc

from capsules.agents import CHANNEL_OPTIONS, HOST_UNREACHABLE
from protos import hostagent_pb2_grpc as pb_grpc

# Input, resize and kill ops give up after this long; the client hears about it.
RPC_TIMEOUT = 5.0

# A grpc.aio channel belongs to the loop that created it. Daphne has one loop;
# tests create one per test, so channels are kept per loop and die with it.
# The stub is kept with its channel: making one builds a callable for every method of the
# service, a cost that does not belong on the path of every keystroke.
_stubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, pb_grpc.HostAgentStub]] = (
    weakref.WeakKeyDictionary()
)

# The lifecycle channels' reconnect backoff, plus room for large output chunks and keepalives
# on the long-lived terminal streams.
_CHANNEL_OPTIONS = [
    *CHANNEL_OPTIONS,
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
]


def stub_for(address: str) -> pb_grpc.HostAgentStub:
    per_loop = _stubs.setdefault(asyncio.get_running_loop(), {})
    stub = per_loop.get(address)
    if stub is None:
        stub = pb_grpc.HostAgentStub(grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS))
        per_loop[address] = stub
    return stub


def describe(error: grpc.aio.AioRpcError) -> str:
    """What a client is told about a failed call to the host agent."""
    return describe_status(error.code(), error.details())


def describe_status(code: grpc.StatusCode, details: str | None) -> str:
    if code == grpc.StatusCode.UNAVAILABLE:
        return HOST_UNREACHABLE
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "sandbox host did not answer in time"
    return details or code.name.lower()
