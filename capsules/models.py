"""Teams, their members and API keys, the hosts that run capsules, and the capsules themselves."""

import uuid

from django.conf import settings
from django.db import models

from capsules.ids import SANDBOX_ID_MAX_LENGTH, new_sandbox_id
from capsules.network import default_policy


class Team(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The team's own quotas (capsules/quotas.py); null means the setting's default
    # (WRENN_TEAM_MAX_CAPSULES, WRENN_TEAM_MAX_VCPUS, WRENN_TEAM_MAX_MEMORY_MB), 0 allows none.
    max_capsules = models.PositiveIntegerField(null=True, blank=True)
    max_vcpus = models.PositiveIntegerField(null=True, blank=True)
    max_memory_mb = models.PositiveIntegerField(null=True, blank=True)
    # Terminal recordings (the recordings app): on unless turned off; input (which can hold
    # secrets) only when turned on; kept for this many days (null: WRENN_RECORDING_RETENTION_DAYS).
    record_terminals = models.BooleanField(default=True)
    record_input = models.BooleanField(default=False)
    recording_retention_days = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="unique_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team.name} ({self.role})"


class APIKey(models.Model):
    class Scope(models.TextChoices):
        FULL = "full", "Full access"
        TERMINAL_OBSERVE = "terminal:observe", "Observe terminals only"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200)
    # The first 12 characters of the raw key ("wrn_ab12cd34"), enough to tell keys apart.
    prefix = models.CharField(max_length=12, editable=False)
    # sha256 hex of the raw key; the raw key itself is never stored.
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # What the key may do: everything its team may, or only watch terminals (read-only).
    scope = models.CharField(max_length=32, choices=Scope.choices, default=Scope.FULL)

    class Meta:
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def __str__(self) -> str:
        state = " revoked" if self.revoked_at else ""
        return f"{self.prefix}… {self.name}{state}"


class Host(models.Model):
    class Status(models.TextChoices):
        ONLINE = "online", "Online"
        UNREACHABLE = "unreachable", "Unreachable"
        DRAINING = "draining", "Draining"

    # "host:port" of the host agent's gRPC server.
    address = models.CharField(max_length=255, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ONLINE)
    created_at = models.DateTimeField(auto_now_add=True)
    # None until the agent first reports in; such a host is never declared dead (see hosts.py).
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The agent's heartbeat token ("wrh_…"), stored as a display prefix and a sha256 hash only.
    token_prefix = models.CharField(max_length=16, blank=True, editable=False)
    token_hash = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    # What the agent last reported about itself; 0 means "not reported".
    runtime = models.CharField(max_length=32, blank=True)
    version = models.CharField(max_length=64, blank=True)
    vcpus = models.PositiveIntegerField(default=0)
    memory_mb = models.PositiveIntegerField(default=0)
    # Which parts of isolation the host gives, {"network": {"on": true, "reason": ""}, …}; None
    # until an agent that reports it sends a heartbeat (see hosts.py).
    isolation = models.JSONField(null=True, blank=True, default=None)

    def __str__(self) -> str:
        return f"{self.address} ({self.status})"


class Sandbox(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        STARTING = "starting", "Starting"
        RUNNING = "running", "Running"
        PAUSING = "pausing", "Pausing"
        PAUSED = "paused", "Paused"
        RESUMING = "resuming", "Resuming"
        STOPPING = "stopping", "Stopping"
        STOPPED = "stopped", "Stopped"
        MISSING = "missing", "Missing"
        ERROR = "error", "Error"

    id = models.CharField(
        primary_key=True, max_length=SANDBOX_ID_MAX_LENGTH, default=new_sandbox_id, editable=False
    )
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="sandboxes")
    host = models.ForeignKey(Host, on_delete=models.PROTECT, null=True, blank=True, related_name="sandboxes")
    template = models.CharField(max_length=100, default="minimal")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    vcpus = models.PositiveIntegerField(default=1)
    memory_mb = models.PositiveIntegerField(default=512)
    disk_size_mb = models.PositiveIntegerField(default=0)
    # Seconds without activity before the reaper pauses the capsule; 0 means never.
    timeout_sec = models.PositiveIntegerField(default=300)
    created_at = models.DateTimeField(auto_now_add=True)
    last_updated = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_active_at = models.DateTimeField(null=True, blank=True)
    # The status a capsule had when its host stopped reporting it, restored when it reappears.
    status_before_missing = models.CharField(max_length=16, choices=Status.choices, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # The egress policy (capsules/network.py), as the host agent was last told it.
    network = models.JSONField(default=default_policy)
    # Processes the out-of-memory killer ended, as the host last reported (heartbeats).
    oom_kills = models.PositiveIntegerField(default=0)
    # What happened to the capsule that its owner should see, oldest first (capsules/events.py).
    events = models.JSONField(default=list, blank=True)

    class Meta:
        indexes = [models.Index(fields=["team", "status"], name="sandbox_team_status")]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"


class TerminalSession(models.Model):
    """What the control plane knows about a PTY session; the host agent holds the process itself."""

    sandbox = models.ForeignKey(Sandbox, on_delete=models.CASCADE, related_name="terminal_sessions")
    tag = models.CharField(max_length=64)
    # Who started it: "user:alice" or "key:wrn_ab12cd34".
    started_by = models.CharField(max_length=200, blank=True)
    command = models.CharField(max_length=500, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    # WebSocket connections attached right now, across every daphne worker.
    viewers = models.IntegerField(default=0)
    started_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["sandbox", "tag"], name="unique_terminal_tag")]
        ordering = ["started_at", "pk"]

    def __str__(self) -> str:
        return f"{self.sandbox_id}/{self.tag}"


class CapsuleSample(models.Model):
    """What a running or paused capsule used at one heartbeat of its host (capsules/metrics.py)."""

    sandbox = models.ForeignKey(Sandbox, on_delete=models.CASCADE, related_name="samples")
    at = models.DateTimeField()
    # The host's cumulative reading, kept to compute the next sample's share; null when the host
    # cannot read it (a runtime without a cgroup per capsule).
    cpu_usec = models.BigIntegerField(null=True)
    # CPU used since the previous sample: seconds, and percent of the capsule's vCPUs (0-100);
    # null on the first sample, after a gap, or when the host cannot read it.
    cpu_seconds = models.FloatField(null=True)
    cpu_pct = models.FloatField(null=True)
    mem_bytes = models.BigIntegerField(null=True)
    disk_bytes = models.BigIntegerField(null=True)

    class Meta:
        indexes = [
            models.Index(fields=["sandbox", "at"], name="sample_sandbox_at"),
            models.Index(fields=["at"], name="sample_at"),
        ]

    def __str__(self) -> str:
        return f"{self.sandbox_id} at {self.at}"


class TeamSample(models.Model):
    """What a team's capsules held at one moment: the stats series and peaks (capsules/metrics.py)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="samples")
    at = models.DateTimeField()
    running = models.PositiveIntegerField()
    vcpus = models.PositiveIntegerField()
    memory_mb = models.PositiveIntegerField()

    class Meta:
        indexes = [
            models.Index(fields=["team", "at"], name="teamsample_team_at"),
            models.Index(fields=["at"], name="teamsample_at"),
        ]

    def __str__(self) -> str:
        return f"{self.team_id} at {self.at}"


class DailyUsage(models.Model):
    """A team's CPU minutes and RAM MB-minutes of one UTC day, added to at every sample."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="daily_usage")
    day = models.DateField()
    cpu_minutes = models.FloatField(default=0.0)
    ram_mb_minutes = models.FloatField(default=0.0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "day"], name="unique_team_day")]

    def __str__(self) -> str:
        return f"{self.team_id} on {self.day}"
