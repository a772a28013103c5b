"""Every change to a capsule goes through these functions: the REST views, the admin, the idle
reaper and the terminal consumer all call them.

Call them outside any transaction: each commits its own steps. A lifecycle operation runs in
three. First, with the capsule's row locked, it checks the status, moves it to the in-between
status (`pausing`, …) and commits, so that a concurrent request sees the operation in progress
and is refused with 409. Then it calls the host agent, with no lock held. Last, with the row
locked again, it sets the final status, or puts back the previous one if the agent failed so
that the operation can be retried.

Each operation leaves one event on the audit trail (audit/trail.py): its success in the
transaction of the last step, which commits the final status, and its refusal or failure once
the failed step has rolled back, in a transaction of its own, so that no refusal is lost with
the change it refused. A create refused by a quota is recorded as `quota.refused`.
"""

import logging
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
from django.db import transaction
from django.db.models import F, Min, Q, QuerySet, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from audit import trail
from capsules import agents, live, states
from capsules.agents import HOST_UNREACHABLE
from capsules.models import Host, Sandbox, Team, TerminalSession
from capsules.network import clean_network, default_policy
from capsules.placement import HeadroomReserved, choose_host, is_reachable
from capsules.quotas import QuotaExceeded, check_quota
from capsules.services import touch_sandbox
from capsules.terminals import close_sessions
from capsules.validation import ValidationFailed, clean_create_params
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from protos import rules

log = logging.getLogger(__name__)

Status = Sandbox.Status
Request = TypeVar("Request")
Response = TypeVar("Response")
NO_CAPACITY = "no host has capacity for this capsule"
AGENT_TOO_OLD_FOR_POLICIES = (
    "the host agent of this capsule cannot change network policies (UNIMPLEMENTED); upgrade it"
)


class ActionError(Exception):
    """An action refused or failed. `code` says which way (one of CODES); each interface answers
    it in its own terms (the REST API maps codes to HTTP statuses in capsules/api/errors.py)."""

    CODES = frozenset(
        {
            "invalid_request",
            "invalid_state",
            "conflict",
            "not_found",
            "quota_exceeded",
            "agent_error",
            "host_unavailable",
            # File calls: the caller may not touch the path, an upload past its limit, the
            # capsule's disk is full.
            "forbidden",
            "too_large",
            "insufficient_storage",
        }
    )

    def __init__(self, code: str, message: str) -> None:
        assert code in self.CODES, code  # noqa: S101 - a programming error, caught by the tests
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TerminalInfo:
    tag: str
    pid: int
    command: str
    # "user:alice" or "key:wrn_ab12cd34"; "" when the control plane did not start it.
    started_by: str
    viewers: int
    bytes_in: int
    bytes_out: int
    exited: bool
    exit_code: int | None
    started_at: datetime | None


@dataclass(frozen=True)
class _Operation:
    verb: str
    in_between: str

    @property
    def allowed(self) -> frozenset[str]:
        return states.sources(self.in_between)


_PAUSE = _Operation("pause", Status.PAUSING)
_RESUME = _Operation("resume", Status.RESUMING)
_DESTROY = _Operation("destroy", Status.STOPPING)


class _Skip(Exception):
    """The capsule no longer qualifies (the reaper re-checks idleness under the lock)."""


class IllegalTransition(Exception):
    """A status change the state machine (capsules/states.py) does not allow: a bug, not a refusal."""


# Helpers


def _move(capsule: Sandbox, to: str) -> None:
    """Set the status of a locked capsule, as the state machine allows; the caller saves it."""
    if not states.can_move(capsule.status, to):
        raise IllegalTransition(f"capsule {capsule.pk}: {capsule.status} -> {to}")
    capsule.status = to


def _invalid_state(status: str, verb: str) -> ActionError:
    return ActionError("invalid_state", f"capsule is {status}; cannot {verb}")


def _agent_failure(exc: grpc.RpcError, verb: str) -> ActionError:
    return ActionError(*agents.failure(exc, f"{verb} the capsule"))


def _locked(sandbox_id: str) -> Sandbox:
    """The capsule's row, locked until the end of the transaction (its host is read, not locked)."""
    capsule = (
        Sandbox.objects.select_for_update(of=("self",)).select_related("host").filter(pk=sandbox_id).first()
    )
    if capsule is None:
        raise ActionError("not_found", f"capsule {sandbox_id} not found")
    return capsule


def _current(sandbox_id: str) -> Sandbox:
    capsule = Sandbox.objects.select_related("host").filter(pk=sandbox_id).first()
    if capsule is None:
        raise ActionError("not_found", f"capsule {sandbox_id} not found")
    return capsule


def _call(
    capsule: Sandbox,
    method: Callable[[pb_grpc.HostAgentStub], "grpc.UnaryUnaryMultiCallable[Request, Response]"],
    request: Request,
) -> Response:
    """`method` of the capsule's agent (e.g. `lambda agent: agent.PtyKill`), called with `request`."""
    assert capsule.host is not None  # noqa: S101 - callers check is_reachable first
    stub = agents.stub_for(capsule.host.address)
    return method(stub)(request, timeout=agents.rpc_timeout(), metadata=agents.call_metadata())


def _begin(
    sandbox_id: str,
    transition: _Operation,
    check: Callable[[Sandbox], None] | None = None,
    allow_no_host: bool = False,
) -> tuple[Sandbox, str]:
    """Step one: check and move to the in-between status, committed. Returns (capsule, previous)."""
    with transaction.atomic():
        capsule = _locked(sandbox_id)
        if capsule.status not in transition.allowed:
            raise _invalid_state(capsule.status, transition.verb)
        if check is not None:
            check(capsule)
        if not (allow_no_host and capsule.host is None) and not is_reachable(capsule.host):
            raise ActionError("host_unavailable", HOST_UNREACHABLE)
        previous = capsule.status
        _move(capsule, transition.in_between)
        capsule.save(update_fields=["status", "last_updated"])
    return capsule, previous


def _finish(
    sandbox_id: str, expected: str, final: str, audit: "_Audit | None" = None, **fields: Any
) -> Sandbox:
    """Step three: the final status, unless something else moved the capsule meanwhile; with
    `audit`, the operation's success is recorded in the same transaction."""
    with transaction.atomic():
        capsule = _locked(sandbox_id)
        if audit is not None:
            # The agent did what was asked, even if something moved the capsule meanwhile.
            audit.succeeded(capsule)
        if capsule.status == expected:
            _move(capsule, final)
        elif capsule.status == Status.MISSING:
            # The host went quiet during the call; when it is back the capsule returns to this.
            capsule.status_before_missing = final
        else:
            log.warning("capsule %s became %s while going to %s", sandbox_id, capsule.status, final)
            return capsule
        for name, value in fields.items():
            setattr(capsule, name, value)
        capsule.save(update_fields=["status", "status_before_missing", "last_updated", *fields])
    return capsule


@dataclass
class _Audit:
    """One lifecycle operation's event on the audit trail: who asked, from where, on what."""

    action: str
    actor: trail.Actor
    where: trail.Where | None
    team_id: Any
    capsule_id: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def succeeded(self, capsule: Sandbox) -> None:
        self._record(self.action, trail.SUCCESS, "", capsule.pk)

    def failed(self, action: str, reason: str) -> None:
        try:
            with transaction.atomic():
                self._record(action, trail.FAILURE, reason, self.capsule_id)
        except Exception:
            # The caller hears of the operation's own failure, not of this one's.
            log.exception("could not record the failure of %s on capsule %s", action, self.capsule_id or "-")

    def _record(self, action: str, outcome: str, reason: str, capsule_id: str) -> None:
        trail.record(
            action,
            self.actor,
            outcome=outcome,
            reason=reason,
            team_id=self.team_id,
            capsule_id=capsule_id,
            where=self.where,
            detail=self.detail,
        )


@contextmanager
def _failures_recorded(audit: _Audit) -> Iterator[None]:
    """Record the refusal or failure of the operation run inside, after its step rolled back."""
    try:
        yield
    except ActionError as exc:
        action = trail.QUOTA_REFUSED if exc.code == "quota_exceeded" else audit.action
        audit.failed(action, exc.message)
        raise
    except _Skip:
        raise
    except Exception as exc:
        audit.failed(audit.action, f"internal error ({type(exc).__name__})")
        raise


def _run(
    capsule: Sandbox,
    previous: str,
    verb: str,
    method: Callable[[pb_grpc.HostAgentStub], "grpc.UnaryUnaryMultiCallable[Request, Any]"],
    request: Request,
    done_if: tuple[grpc.StatusCode, ...] = (),
) -> None:
    """Step two: the agent call; on failure the previous status is put back and ActionError raised.

    An error whose code is in `done_if` counts as success.
    """
    try:
        _call(capsule, method, request)
    except grpc.RpcError as exc:
        if agents.status_of(exc)[0] in done_if:
            return
        _finish(capsule.pk, capsule.status, previous)
        raise _agent_failure(exc, verb) from exc
    except Exception:
        _finish(capsule.pk, capsule.status, previous)
        raise


def _run_announced(
    kind: str,
    actor: live.Actor | None,
    capsule: Sandbox,
    previous: str,
    verb: str,
    method: Callable[[pb_grpc.HostAgentStub], "grpc.UnaryUnaryMultiCallable[Request, Any]"],
    request: Request,
    done_if: tuple[grpc.StatusCode, ...] = (),
) -> None:
    """`_run`, and when the agent fails, an event `kind` with outcome `error` on the team's streams."""
    try:
        _run(capsule, previous, verb, method, request, done_if)
    except ActionError as exc:
        live.capsule_event(kind, capsule.pk, actor=actor, outcome=live.ERROR, error=exc.message)
        raise


def _announce(kind: str, capsule: Sandbox, actor: live.Actor | None, **metadata: str) -> Sandbox:
    live.capsule_event(kind, capsule.pk, actor=actor, outcome=live.SUCCESS, metadata=metadata)
    return capsule


# Lifecycle


def create_capsule(
    team: Team,
    *,
    template: str | None = None,
    vcpus: int | None = None,
    memory_mb: int | None = None,
    timeout_sec: int | None = None,
    metadata: dict[str, Any] | None = None,
    network: dict[str, Any] | None = None,
    host: Host | None = None,
    actor: live.Actor | None = None,
    audit_actor: trail.Actor = trail.SYSTEM,
    where: trail.Where | None = None,
) -> Sandbox:
    """A new running capsule for `team` on the least loaded host that fits it, or on `host`.

    Refused with `quota_exceeded` when it would take the team past one of its quotas
    (capsules/quotas.py), and with `host_unavailable` when no host has room for it.
    `audit_actor` and `where` say who asked, for the audit trail.
    """
    audit = _Audit(trail.CAPSULE_CREATE, audit_actor, where, team.pk)
    with _failures_recorded(audit):
        return _create(
            team,
            audit,
            actor,
            template=template,
            vcpus=vcpus,
            memory_mb=memory_mb,
            timeout_sec=timeout_sec,
            metadata=metadata,
            network=network,
            host=host,
        )


def _create(
    team: Team,
    audit: _Audit,
    actor: live.Actor | None,
    *,
    template: str | None,
    vcpus: int | None,
    memory_mb: int | None,
    timeout_sec: int | None,
    metadata: dict[str, Any] | None,
    network: dict[str, Any] | None,
    host: Host | None,
) -> Sandbox:
    try:
        params = clean_create_params(template, vcpus, memory_mb, timeout_sec, metadata)
        policy = default_policy() if network is None else clean_network(network)
    except ValidationFailed as exc:
        raise ActionError("invalid_request", exc.message) from None
    audit.detail.update(template=params.template, vcpus=params.vcpus, memory_mb=params.memory_mb)
    with transaction.atomic():
        # The team's row stays locked until the pending capsule is committed, so two creates of
        # one team count each other's capsules and cannot both take its last slot. NO KEY: rows
        # that merely refer to the team (a new API key, say) need not wait for it.
        locked_team = Team.objects.select_for_update(no_key=True).filter(pk=team.pk).first()
        if locked_team is None:
            raise ActionError("not_found", f"team {team.pk} not found")
        try:
            check_quota(locked_team, params.vcpus, params.memory_mb)
            if host is None:
                host = choose_host(params.vcpus, params.memory_mb, team_id=team.pk, for_update=True)
            elif host.status != Host.Status.ONLINE:
                host = None
        except QuotaExceeded as exc:
            raise ActionError("quota_exceeded", exc.message) from None
        except HeadroomReserved as exc:
            raise ActionError("host_unavailable", str(exc)) from None
        if host is None:
            raise ActionError("host_unavailable", NO_CAPACITY)
        capsule = Sandbox.objects.create(
            team=team,
            host=host,
            status=Status.PENDING,
            template=params.template,
            vcpus=params.vcpus,
            memory_mb=params.memory_mb,
            disk_size_mb=params.disk_size_mb,
            timeout_sec=params.timeout_sec,
            metadata=params.metadata,
            network=policy,
        )
    audit.capsule_id = capsule.pk
    with transaction.atomic():
        capsule = _locked(capsule.pk)
        if capsule.status != Status.PENDING:
            # Destroyed between the two steps.
            raise ActionError("conflict", f"capsule is {capsule.status}; it changed while being created")
        _move(capsule, Status.STARTING)
        capsule.save(update_fields=["status", "last_updated"])
    request = pb.CreateSandboxRequest(
        sandbox_id=capsule.pk,
        template=capsule.template,
        vcpus=capsule.vcpus,
        memory_mb=capsule.memory_mb,
        disk_size_mb=capsule.disk_size_mb,
        network=network_message(capsule.network),
    )
    # A capsule the agent may or may not have made ends in `error`, from which it can be destroyed.
    create = live.CAPSULE_CREATE
    _run_announced(create, actor, capsule, Status.ERROR, "create", lambda agent: agent.CreateSandbox, request)
    now = timezone.now()
    log.info("created capsule %s on %s", capsule.pk, host.address)
    created = _finish(capsule.pk, Status.STARTING, Status.RUNNING, audit, started_at=now, last_active_at=now)
    return _announce(create, created, actor)


def _audit_of(action: str, sandbox: Sandbox, audit_actor: trail.Actor, where: trail.Where | None) -> _Audit:
    return _Audit(action, audit_actor, where, sandbox.team_id, sandbox.pk)


def pause_capsule(
    sandbox: Sandbox,
    actor: live.Actor | None = None,
    *,
    audit_actor: trail.Actor = trail.SYSTEM,
    where: trail.Where | None = None,
) -> Sandbox:
    audit = _audit_of(trail.CAPSULE_PAUSE, sandbox, audit_actor, where)
    with _failures_recorded(audit):
        return _pause(sandbox.pk, audit, actor=actor)


def _pause(
    sandbox_id: str,
    audit: _Audit,
    check: Callable[[Sandbox], None] | None = None,
    actor: live.Actor | None = None,
    **metadata: str,
) -> Sandbox:
    capsule, previous = _begin(sandbox_id, _PAUSE, check)
    request = pb.PauseSandboxRequest(sandbox_id=capsule.pk)
    pause = live.CAPSULE_PAUSE
    _run_announced(pause, actor, capsule, previous, "pause", lambda agent: agent.PauseSandbox, request)
    paused = _finish(capsule.pk, Status.PAUSING, Status.PAUSED, audit)
    return _announce(pause, paused, actor, **metadata)


def resume_capsule(
    sandbox: Sandbox,
    actor: live.Actor | None = None,
    *,
    audit_actor: trail.Actor = trail.SYSTEM,
    where: trail.Where | None = None,
) -> Sandbox:
    audit = _audit_of(trail.CAPSULE_RESUME, sandbox, audit_actor, where)
    with _failures_recorded(audit):
        return _resume(sandbox, actor, audit)


def _resume(sandbox: Sandbox, actor: live.Actor | None, audit: _Audit) -> Sandbox:
    capsule, previous = _begin(sandbox.pk, _RESUME)
    request = pb.ResumeSandboxRequest(sandbox_id=capsule.pk)
    resume = live.CAPSULE_RESUME
    _run_announced(resume, actor, capsule, previous, "resume", lambda agent: agent.ResumeSandbox, request)
    resumed = _finish(capsule.pk, Status.RESUMING, Status.RUNNING, audit, last_active_at=timezone.now())
    return _announce(resume, resumed, actor)


def destroy_capsule(
    sandbox: Sandbox,
    actor: live.Actor | None = None,
    *,
    audit_actor: trail.Actor = trail.SYSTEM,
    where: trail.Where | None = None,
) -> Sandbox:
    """Destroy the capsule on its host and mark it stopped; the row stays as a record."""
    audit = _audit_of(trail.CAPSULE_DESTROY, sandbox, audit_actor, where)
    with _failures_recorded(audit):
        return _destroy(sandbox, actor, audit)


def _destroy(sandbox: Sandbox, actor: live.Actor | None, audit: _Audit) -> Sandbox:
    # A capsule that never got a host exists nowhere but in this table.
    capsule, previous = _begin(sandbox.pk, _DESTROY, allow_no_host=True)
    if capsule.host is not None:
        request = pb.DestroySandboxRequest(sandbox_id=capsule.pk)
        # NOT_FOUND: already gone from the host, which is what destroy wanted.
        gone = (grpc.StatusCode.NOT_FOUND,)
        _run_announced(
            live.CAPSULE_DESTROY,
            actor,
            capsule,
            previous,
            "destroy",
            lambda agent: agent.DestroySandbox,
            request,
            done_if=gone,
        )
    # Its terminals died with it: nobody will see their exits.
    close_sessions(Q(sandbox_id=capsule.pk))
    log.info("destroyed capsule %s", capsule.pk)
    destroyed = _finish(capsule.pk, Status.STOPPING, Status.STOPPED, audit)
    return _announce(live.CAPSULE_DESTROY, destroyed, actor)


# Network policy


def network_message(policy: dict[str, Any]) -> pb.NetworkPolicy:
    """A checked policy (capsules.network.clean_network) as the agent takes it."""
    return pb.NetworkPolicy(
        allow_internet=policy["allow_internet"], allow_out=policy["allow_out"], deny_out=policy["deny_out"]
    )


def set_network_policy(sandbox: Sandbox, network: Any) -> Sandbox:
    """Replace the egress policy of a running or paused capsule, on its host and then on its row;
    it applies to new connections at once, without a restart. A key left out takes its default.

    Unlike a lifecycle operation, this holds the row's lock across the call to the agent (bounded
    by the call's deadline): two changes at the same time then reach the agent in the order they
    are saved, so that the row always says what the agent enforces.
    """
    try:
        policy = clean_network(network)
    except ValidationFailed as exc:
        raise ActionError("invalid_request", exc.message) from None
    with transaction.atomic():
        capsule = _locked(sandbox.pk)
        if capsule.status not in states.WITH_PROCESSES:
            raise _invalid_state(capsule.status, "change its network policy")
        if not is_reachable(capsule.host):
            raise ActionError("host_unavailable", HOST_UNREACHABLE)
        request = pb.SetNetworkPolicyRequest(sandbox_id=capsule.pk, network=network_message(policy))
        try:
            _call(capsule, lambda agent: agent.SetNetworkPolicy, request)
        except grpc.RpcError as exc:
            if agents.status_of(exc)[0] == grpc.StatusCode.UNIMPLEMENTED:
                raise ActionError("agent_error", AGENT_TOO_OLD_FOR_POLICIES) from exc
            raise _agent_failure(exc, "change the network policy of") from exc
        capsule.network = policy
        capsule.save(update_fields=["network", "last_updated"])
    log.info("capsule %s has a new network policy", capsule.pk)
    return capsule


# Hosts that stop reporting their capsules (capsules.hosts finds them)


def mark_missing(capsules: QuerySet[Sandbox], now: datetime) -> int:
    """Those of `capsules` that are lost with their host go `missing`, remembering the status they
    had; how many. Each one's team hears of it (`capsule.state.changed`)."""
    # Read first, for the events: when nothing is lost (every heartbeat, nearly) that read is
    # the only query, as the UPDATE alone was.
    before = dict(capsules.filter(status__in=states.LOST_WITH_HOST).values_list("pk", "status"))
    if not before:
        return 0
    lost = Sandbox.objects.filter(pk__in=list(before), status__in=states.LOST_WITH_HOST)
    count = lost.update(status_before_missing=F("status"), status=Status.MISSING, last_updated=now)
    for sandbox_id, status in before.items():
        _state_changed(sandbox_id, status, Status.MISSING, "host_failure")
    return count


def _state_changed(sandbox_id: str, was: str, now: str, reason: str) -> None:
    metadata = {"from": was, "to": now, "reason": reason}
    live.capsule_event(live.CAPSULE_STATE_CHANGED, sandbox_id, metadata=metadata)


def restore_capsule(capsule: Sandbox, reported_state: str) -> None:
    """A missing capsule (row locked) that its host reports again returns: to the state the host
    reports, else to where it was, else running."""
    settled = (Status.RUNNING, Status.PAUSED)
    if reported_state in settled:
        to = reported_state
    elif capsule.status_before_missing in settled:
        to = capsule.status_before_missing
    else:
        to = Status.RUNNING
    _move(capsule, to)
    capsule.status_before_missing = ""
    capsule.save(update_fields=["status", "status_before_missing", "last_updated"])
    _state_changed(capsule.pk, Status.MISSING, to, "host_back")


def agent_address(sandbox: Sandbox, verb: str) -> str:
    """The address of the host agent of a running capsule, for calls into it (commands, its
    processes, its files); refused with `invalid_state` or `host_unavailable` otherwise."""
    if sandbox.status != Status.RUNNING:
        raise _invalid_state(sandbox.status, verb)
    if not is_reachable(sandbox.host) or sandbox.host is None or not sandbox.host.address:
        raise ActionError("host_unavailable", HOST_UNREACHABLE)
    return sandbox.host.address


def record_activity(sandbox_id: str) -> None:
    """Someone is using the capsule now: the idle reaper counts from here."""
    touch_sandbox(sandbox_id)


def ping_capsule(sandbox: Sandbox) -> Sandbox:
    """Record activity on a running capsule, postponing its idle pause."""
    if not Sandbox.objects.filter(pk=sandbox.pk, status=Status.RUNNING).update(last_active_at=timezone.now()):
        raise _invalid_state(_current(sandbox.pk).status, "ping")
    return _current(sandbox.pk)


def reap_idle(now: datetime | None = None) -> list[str]:
    """Pause running capsules idle for longer than their timeout (0 = never); returns their ids.

    Idle time counts from the last activity, else the start, else the creation.
    """
    now = now or timezone.now()
    running = Sandbox.objects.filter(status=Status.RUNNING, timeout_sec__gt=0)
    shortest = running.aggregate(shortest=Min("timeout_sec"))["shortest"]
    if shortest is None:
        return []
    # Per-row "idle_since + timeout_sec seconds" needs interval arithmetic that SQLite lacks, so
    # SQL narrows the rows down with the shortest timeout and Python decides.
    candidates = (
        running.annotate(idle_since=Coalesce("last_active_at", "started_at", "created_at"))
        .filter(idle_since__lt=now - timedelta(seconds=shortest))
        .order_by("idle_since")
        .values_list("pk", "idle_since", "timeout_sec", "team_id")
    )
    due = [(pk, team_id) for pk, since, timeout, team_id in candidates if _idle_past(since, timeout, now)]

    def still_idle(capsule: Sandbox) -> None:
        since = capsule.last_active_at or capsule.started_at or capsule.created_at
        if not _idle_past(since, capsule.timeout_sec, now):
            raise _Skip

    paused = []
    for sandbox_id, team_id in due:
        audit = _Audit(
            trail.CAPSULE_PAUSE, trail.SYSTEM, None, team_id, sandbox_id, {"reason": "idle_timeout"}
        )
        try:
            with _failures_recorded(audit):
                _pause(sandbox_id, audit, still_idle, live.SYSTEM, reason="idle_timeout")
        except _Skip:
            continue
        except ActionError as exc:
            log.warning("could not pause idle capsule %s: %s", sandbox_id, exc.message)
            continue
        log.info("paused idle capsule %s", sandbox_id)
        paused.append(sandbox_id)
    return paused


def _idle_past(since: datetime, timeout_sec: int, now: datetime) -> bool:
    return timeout_sec > 0 and since + timedelta(seconds=timeout_sec) < now


# Terminals


def _terminal_capsule(sandbox: Sandbox, verb: str) -> Sandbox:
    capsule = _current(sandbox.pk)
    if capsule.status not in states.WITH_PROCESSES:
        raise _invalid_state(capsule.status, verb)
    if not is_reachable(capsule.host):
        raise ActionError("host_unavailable", HOST_UNREACHABLE)
    return capsule


def list_terminal_sessions(sandbox: Sandbox) -> list[TerminalInfo]:
    """The capsule's PTY sessions as its agent reports them, with who started them and who watches."""
    capsule = _terminal_capsule(sandbox, "list terminals")
    request = pb.ListPtySessionsRequest(sandbox_id=capsule.pk)
    try:
        response = _call(capsule, lambda agent: agent.ListPtySessions, request)
    except grpc.RpcError as exc:
        raise _agent_failure(exc, "list the terminals of") from exc
    rows = {row.tag: row for row in TerminalSession.objects.filter(sandbox_id=capsule.pk)}
    return [_terminal_info(session, rows.get(session.tag)) for session in response.sessions]


def _terminal_info(session: pb.PtySessionInfo, row: TerminalSession | None) -> TerminalInfo:
    command = shlex.join([session.cmd, *session.args]) if session.cmd else (row.command if row else "")
    started_at = (
        datetime.fromtimestamp(session.started_at_ms / 1000, tz=UTC)
        if session.started_at_ms
        else (row.started_at if row else None)
    )
    return TerminalInfo(
        tag=session.tag,
        pid=session.pid,
        command=command,
        started_by=row.started_by if row and row.started_by else session.owner,
        viewers=row.viewers if row else 0,
        bytes_in=session.bytes_in,
        bytes_out=session.bytes_out,
        exited=session.exited,
        exit_code=session.exit_code if session.exited else None,
        started_at=started_at,
    )


def kill_terminal_session(sandbox: Sandbox, tag: str) -> None:
    """Kill the process of terminal `tag`; its viewers then receive its exit."""
    if not rules.is_tag(tag):
        raise ActionError("invalid_request", f"tag {tag!r} is not a terminal tag")
    capsule = _terminal_capsule(sandbox, "kill terminals")
    try:
        _call(capsule, lambda agent: agent.PtyKill, pb.PtyKillRequest(sandbox_id=capsule.pk, tag=tag))
    except grpc.RpcError as exc:
        if agents.status_of(exc)[0] == grpc.StatusCode.NOT_FOUND:
            raise ActionError("not_found", f"capsule has no terminal session {tag}") from exc
        raise _agent_failure(exc, "kill a terminal of") from exc


def _capsule_exists(sandbox_id: str) -> bool:
    # Foreign keys are checked at commit on PostgreSQL, so a bad id is caught here instead.
    if Sandbox.objects.filter(pk=sandbox_id).exists():
        return True
    log.warning("terminal event for unknown capsule %s ignored", sandbox_id)
    return False


def record_terminal_started(sandbox_id: str, tag: str, started_by: str, command: str, pid: int) -> None:
    if not _capsule_exists(sandbox_id):
        return
    TerminalSession.objects.update_or_create(
        sandbox_id=sandbox_id,
        tag=tag,
        defaults={
            "started_by": started_by[:200],
            "command": command[:500],
            "pid": pid,
            "ended_at": None,
            "exit_code": None,
        },
    )


def record_viewer(sandbox_id: str, tag: str, delta: int) -> None:
    """Add `delta` (+1 on attach, -1 on detach) to the session's viewer count, never below 0."""
    if not _capsule_exists(sandbox_id):
        return
    with transaction.atomic():
        TerminalSession.objects.get_or_create(sandbox_id=sandbox_id, tag=tag)
        TerminalSession.objects.filter(sandbox_id=sandbox_id, tag=tag).update(
            viewers=Greatest(F("viewers") + delta, Value(0))
        )


def record_terminal_exit(sandbox_id: str, tag: str, exit_code: int) -> None:
    if not _capsule_exists(sandbox_id):
        return
    TerminalSession.objects.update_or_create(
        sandbox_id=sandbox_id,
        tag=tag,
        defaults={"ended_at": timezone.now(), "exit_code": exit_code},
    )
