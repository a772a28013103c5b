"""What capsules.actions sends a host agent about limits and network policies, and how it takes the
answers: a unit test of that module against a small in-process gRPC server that records requests.

The real host agent gets SetNetworkPolicy in issue 10; until then the end-to-end test of a change
on a running capsule cannot run on it, and this one stands in.
"""

from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from capsules import agents
from capsules.actions import AGENT_TOO_OLD_FOR_POLICIES, ActionError, create_capsule, set_network_policy
from capsules.models import Host, Sandbox, Team
from capsules.states import WITH_PROCESSES
from protos import hostagent_pb2 as pb

Status = Sandbox.Status
SERVICE = "wrenn.hostagent.v1.HostAgent"
DEFAULT = {"allow_internet": True, "allow_out": [], "deny_out": []}
POLICY = {"allow_internet": False, "allow_out": ["10.8.0.0/16", "2001:db8::/32"], "deny_out": ["10.8.9.0/24"]}


@dataclass
class Recorder:
    """A gRPC server with CreateSandbox and SetNetworkPolicy only (anything else is UNIMPLEMENTED)."""

    address: str = ""
    requests: list[Message] = field(default_factory=list)
    # When set, every call fails with this code.
    fail_with: grpc.StatusCode | None = None

    def create(
        self, request: pb.CreateSandboxRequest, context: grpc.ServicerContext
    ) -> pb.CreateSandboxResponse:
        self._answer(request, context)
        return pb.CreateSandboxResponse(sandbox=pb.Sandbox(sandbox_id=request.sandbox_id, state="running"))

    def set_policy(
        self, request: pb.SetNetworkPolicyRequest, context: grpc.ServicerContext
    ) -> pb.SetNetworkPolicyResponse:
        self._answer(request, context)
        return pb.SetNetworkPolicyResponse()

    def _answer(self, request: Message, context: grpc.ServicerContext) -> None:
        self.requests.append(request)
        if self.fail_with is not None:
            context.abort(self.fail_with, "refused by the test")


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    handlers = {
        "CreateSandbox": grpc.unary_unary_rpc_method_handler(
            recorder.create,
            request_deserializer=pb.CreateSandboxRequest.FromString,
            response_serializer=pb.CreateSandboxResponse.SerializeToString,
        ),
        "SetNetworkPolicy": grpc.unary_unary_rpc_method_handler(
            recorder.set_policy,
            request_deserializer=pb.SetNetworkPolicyRequest.FromString,
            response_serializer=pb.SetNetworkPolicyResponse.SerializeToString,
        ),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    recorder.address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        yield recorder
    finally:
        server.stop(grace=None)
        agents.close_channels()


@pytest.fixture
def recording_host(recorder: Recorder, db: None) -> Host:
    return Host.objects.create(address=recorder.address)


def on_host(team: Team, host: Host, status: str = Status.RUNNING, **fields: Any) -> Sandbox:
    return Sandbox.objects.create(team=team, host=host, status=status, **fields)


def refusal(action: Any, *args: Any) -> ActionError:
    with pytest.raises(ActionError) as caught:
        action(*args)
    return caught.value


def policy_of(message: pb.NetworkPolicy) -> dict[str, Any]:
    return {
        "allow_internet": message.allow_internet,
        "allow_out": list(message.allow_out),
        "deny_out": list(message.deny_out),
    }


# Create


def test_create_sends_the_limits_and_the_default_policy(
    team: Team, recording_host: Host, recorder: Recorder
) -> None:
    capsule = create_capsule(team, vcpus=2, memory_mb=256)
    [request] = recorder.requests
    assert isinstance(request, pb.CreateSandboxRequest)
    assert (request.sandbox_id, request.template) == (capsule.pk, "minimal")
    assert (request.vcpus, request.memory_mb, request.disk_size_mb) == (2, 256, 1024)
    assert request.HasField("network")
    assert policy_of(request.network) == DEFAULT
    assert capsule.network == DEFAULT


def test_create_sends_the_disk_size_of_the_template(
    team: Team, recording_host: Host, recorder: Recorder
) -> None:
    create_capsule(team, template="base")
    [request] = recorder.requests
    assert isinstance(request, pb.CreateSandboxRequest)
    assert request.disk_size_mb == 4096


def test_create_sends_and_keeps_the_policy_in_canonical_form(
    team: Team, recording_host: Host, recorder: Recorder
) -> None:
    capsule = create_capsule(team, network={"allow_out": ["2001:DB8::/32"], "deny_out": ["203.0.113.9"]})
    expected = {"allow_internet": True, "allow_out": ["2001:db8::/32"], "deny_out": ["203.0.113.9/32"]}
    [request] = recorder.requests
    assert isinstance(request, pb.CreateSandboxRequest)
    assert policy_of(request.network) == expected
    capsule.refresh_from_db()
    assert (capsule.status, capsule.network) == (Status.RUNNING, expected)


def test_create_with_a_bad_policy_creates_nothing(
    team: Team, recording_host: Host, recorder: Recorder
) -> None:
    error = refusal(lambda: create_capsule(team, network={"deny_out": ["10.0.0.1/8"]}))
    assert (error.code, error.message) == (
        "invalid_request",
        "network.deny_out[0] '10.0.0.1/8' has host bits set: write '10.0.0.0/8' for the network, "
        "or '10.0.0.1/32' for the one address",
    )
    assert recorder.requests == []
    assert not Sandbox.objects.exists()


# Changing the policy


@pytest.mark.parametrize("status", sorted(WITH_PROCESSES))
def test_a_new_policy_goes_to_the_agent_then_to_the_row(
    team: Team, recording_host: Host, recorder: Recorder, status: str
) -> None:
    capsule = on_host(team, recording_host, status)
    changed = set_network_policy(capsule, POLICY)
    [request] = recorder.requests
    assert isinstance(request, pb.SetNetworkPolicyRequest)
    assert request.sandbox_id == capsule.pk
    assert policy_of(request.network) == POLICY
    assert changed.network == POLICY
    capsule.refresh_from_db()
    assert (capsule.network, capsule.status) == (POLICY, status)


def test_a_key_left_out_takes_its_default(team: Team, recording_host: Host, recorder: Recorder) -> None:
    capsule = on_host(team, recording_host, network=POLICY)
    assert set_network_policy(capsule, {"deny_out": ["198.51.100.0/24"]}).network == {
        **DEFAULT,
        "deny_out": ["198.51.100.0/24"],
    }
    [request] = recorder.requests
    assert isinstance(request, pb.SetNetworkPolicyRequest)
    assert request.network.allow_internet is True


def test_a_bad_policy_is_refused_before_the_agent_hears_of_it(
    team: Team, recording_host: Host, recorder: Recorder
) -> None:
    capsule = on_host(team, recording_host)
    error = refusal(set_network_policy, capsule, {"allow_out": ["169.254.169.254/32"]})
    assert (error.code, error.message) == (
        "invalid_request",
        "network.allow_out[0] '169.254.169.254/32' overlaps 169.254.0.0/16 (link-local and cloud metadata), "
        "which no capsule may be allowed to reach",
    )
    assert recorder.requests == []
    capsule.refresh_from_db()
    assert capsule.network == DEFAULT


@pytest.mark.parametrize("status", sorted(set(Status) - WITH_PROCESSES))
def test_only_a_running_or_paused_capsule_has_a_policy_to_change(
    team: Team, recording_host: Host, recorder: Recorder, status: str
) -> None:
    capsule = on_host(team, recording_host, status)
    error = refusal(set_network_policy, capsule, POLICY)
    assert (error.code, error.message) == (
        "invalid_state",
        f"capsule is {status}; cannot change its network policy",
    )
    assert recorder.requests == []
    capsule.refresh_from_db()
    assert capsule.network == DEFAULT


def test_a_refusal_of_the_agent_is_an_agent_error_and_changes_nothing(
    team: Team, recording_host: Host, recorder: Recorder
) -> None:
    capsule = on_host(team, recording_host)
    recorder.fail_with = grpc.StatusCode.NOT_FOUND
    error = refusal(set_network_policy, capsule, POLICY)
    assert (error.code, error.message) == (
        "agent_error",
        "the host agent could not change the network policy of the capsule (NOT_FOUND: refused by the test)",
    )
    capsule.refresh_from_db()
    assert capsule.network == DEFAULT


def test_an_agent_without_network_policies_is_told_apart(
    team: Team, recording_host: Host, recorder: Recorder
) -> None:
    capsule = on_host(team, recording_host)
    recorder.fail_with = grpc.StatusCode.UNIMPLEMENTED
    error = refusal(set_network_policy, capsule, POLICY)
    assert (error.code, error.message) == ("agent_error", AGENT_TOO_OLD_FOR_POLICIES)
    capsule.refresh_from_db()
    assert capsule.network == DEFAULT


def test_a_host_marked_unreachable_is_not_called(
    team: Team, recording_host: Host, recorder: Recorder
) -> None:
    capsule = on_host(team, recording_host)
    Host.objects.filter(pk=recording_host.pk).update(status=Host.Status.UNREACHABLE)
    error = refusal(set_network_policy, capsule, POLICY)
    assert (error.code, error.message) == ("host_unavailable", "sandbox host is not reachable")
    assert recorder.requests == []


def test_a_host_that_does_not_answer_is_host_unavailable(team: Team, dead_host: Host) -> None:
    capsule = on_host(team, dead_host)
    error = refusal(set_network_policy, capsule, POLICY)
    assert (error.code, error.message) == ("host_unavailable", "sandbox host is not reachable")
    capsule.refresh_from_db()
    assert capsule.network == DEFAULT
