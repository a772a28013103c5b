"""Heartbeats to the control plane: every interval, POST this host's address, capacity and sandboxes.

The register token an operator issued identifies the host. The control plane answers
`{"host_id": "...", "interval": 10}`; a sane interval replaces ours. Failures are logged once
per streak (and the recovery once), so a control plane that is down does not flood the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from hostagent import __version__
from hostagent.lifecycle import SandboxStatus

log = logging.getLogger(__name__)

HEARTBEAT_PATH = "/v1/hosts/heartbeat"
MIN_INTERVAL = 0.1
MAX_INTERVAL = 300.0
# Short: asyncio.run waits for a request in flight when the agent stops.
HTTP_TIMEOUT = 5.0
MAX_ANSWER = 64 * 1024
REFUSED = (401, 403)
RETRY_FIRST = 0.25
# The longest isolation reason the control plane accepts (capsules/hosts.py) is 500 characters.
MAX_REASON = 480


@dataclass(frozen=True)
class HeartbeatConfig:
    control_plane: str
    register_token: str
    advertise: str
    interval: float = 10.0

    @property
    def url(self) -> str:
        return self.control_plane.rstrip("/") + HEARTBEAT_PATH


class HeartbeatFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect fails the heartbeat: urllib would resend the token to wherever it points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(NoRedirects())


def memory_mb() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)


def shortened(isolation: dict[str, Any]) -> dict[str, Any]:
    """The isolation report with each reason cut to what the control plane takes (a long runc
    error would otherwise get every heartbeat refused, and the host never online)."""
    parts = {}
    for name, part in isolation.items():
        reason = str(part.get("reason", ""))
        if len(reason) > MAX_REASON:
            reason = reason[: MAX_REASON - 1] + "…"
        parts[name] = {**part, "reason": reason}
    return parts


def sane_interval(value: object) -> float | None:
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and MIN_INTERVAL <= value <= MAX_INTERVAL
    ):
        return float(value)
    return None


async def _nothing() -> None:
    return None


class Heartbeat:
    def __init__(
        self,
        config: HeartbeatConfig,
        runtime: str,
        statuses: Callable[[], list[SandboxStatus]],
        isolation: Callable[[], dict[str, Any]] | None = None,
        refresh: Callable[[], Awaitable[None]] = _nothing,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.statuses = statuses
        self.isolation = isolation
        self.refresh = refresh
        self.interval = config.interval
        # Until the control plane has answered once (it may be starting beside us), and after a
        # failure, the next attempt comes sooner than the interval: RETRY_FIRST, doubling.
        self._retry = RETRY_FIRST
        self.host_id: str | None = None
        # The kind of failure of the current streak, None while heartbeats succeed.
        self._failing: str | None = None

    async def run(self) -> None:
        log.info("sending heartbeats to %s every %ss", self.config.url, self.interval)
        while True:
            try:
                await self.beat()
            except Exception:
                # A bug here must not end the heartbeats, nor surface only at shutdown.
                log.exception("heartbeat failed unexpectedly")
            await asyncio.sleep(self.next_delay())

    def next_delay(self) -> float:
        """The interval once heartbeats work; after a failure, a short delay doubling up to it."""
        if self._failing is None and self.host_id is not None:
            self._retry = RETRY_FIRST
            return self.interval
        delay = min(self._retry, self.interval)
        self._retry = min(self._retry * 2, self.interval)
        return delay

    def payload(self) -> dict[str, Any]:
        payload = {
            "address": self.config.advertise,
            "runtime": self.runtime,
            "version": __version__,
            "capacity": {"vcpus": os.cpu_count() or 1, "memory_mb": memory_mb()},
            "sandboxes": [
                {
                    "id": s.sandbox_id,
                    "state": s.state,
                    "pty_sessions": s.pty_sessions,
                    "oom_kills": s.oom_kills,
                    "pty_tags": list(s.pty_tags),
                    # cpu_usec, mem_bytes, disk_bytes: those the runtime can read.
                    **s.readings.report(),
                }
                for s in self.statuses()
            ],
        }
        if self.isolation is not None:
            payload["isolation"] = shortened(self.isolation())
        return payload

    async def beat(self) -> None:
        await self.refresh()
        body = json.dumps(self.payload()).encode()
        try:
            answer = await asyncio.to_thread(self._post, body)
        except HeartbeatFailed as failure:
            self._failed(failure)
        else:
            self._succeeded(answer)

    def _post(self, body: bytes) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked when parsing options
            self.config.url,
            data=body,
            method="POST",
            headers={
                "Authorization": f"Bearer {self.config.register_token}",
                "Content-Type": "application/json",
                "User-Agent": f"wrenn-hostagent/{__version__}",
            },
        )
        try:
            with _OPENER.open(request, timeout=HTTP_TIMEOUT) as response:
                raw = response.read(MAX_ANSWER)
        except urllib.error.HTTPError as exc:
            try:
                detail = exc.read(200).decode(errors="replace").strip()
            except Exception:  # the error's body is only a hint
                detail = ""
            kind = "refused" if exc.code in REFUSED else f"http-{exc.code}"
            raise HeartbeatFailed(kind, f"HTTP {exc.code} {exc.reason}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise HeartbeatFailed("unreachable", f"cannot reach the control plane: {reason}") from exc
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        return answer if isinstance(answer, dict) else {}

    def _failed(self, failure: HeartbeatFailed) -> None:
        log.debug("heartbeat attempt failed: %s", failure.message)
        if failure.kind == self._failing:
            return
        self._failing = failure.kind
        if failure.kind == "refused":
            log.error(
                "the control plane at %s refused this host's register token (%s): check "
                "--register-token-file or HOSTAGENT_REGISTER_TOKEN; retrying every %ss",
                self.config.control_plane,
                failure.message,
                self.interval,
            )
        else:
            log.warning(
                "heartbeat to %s failed: %s; retrying every %ss (logged again once it recovers)",
                self.config.url,
                failure.message,
                self.interval,
            )

    def _succeeded(self, answer: dict[str, Any]) -> None:
        if self._failing is not None:
            log.info("heartbeats to %s work again", self.config.url)
            self._failing = None
        host_id = answer.get("host_id")
        if isinstance(host_id, str) and host_id != self.host_id:
            log.info("registered with the control plane at %s as host %s", self.config.control_plane, host_id)
            self.host_id = host_id
        interval = sane_interval(answer.get("interval"))
        if interval is not None and interval != self.interval:
            log.info("heartbeat interval is now %ss, as the control plane asks", interval)
            self.interval = interval
