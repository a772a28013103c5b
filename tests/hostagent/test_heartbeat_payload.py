"""What a heartbeat carries, checked without an agent: the isolation report fits the control plane."""

from __future__ import annotations

from capsules.hosts import MAX_ISOLATION_REASON
from hostagent.heartbeat import shortened


def test_a_long_isolation_reason_is_cut_to_what_the_control_plane_takes() -> None:
    error = "runc run failed: " + "x" * 2000  # a probe's error can be as long as runc makes it
    report = shortened({"runtime": {"on": False, "reason": error}, "seccomp": {"on": True, "reason": "ok"}})
    assert len(report["runtime"]["reason"]) <= MAX_ISOLATION_REASON
    assert report["runtime"]["reason"].startswith("runc run failed: xxx")
    assert report["runtime"]["reason"].endswith("…")
    assert report["runtime"]["on"] is False
    assert report["seccomp"] == {"on": True, "reason": "ok"}
