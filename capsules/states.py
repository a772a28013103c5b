"""The capsule state machine: which status may follow which.

`capsules.actions` is the only code that changes a capsule's status, and it checks every change
against TRANSITIONS; which statuses an operation starts from is read from here too, and so do
the tests.
"""

from capsules.models import Sandbox

Status = Sandbox.Status

TRANSITIONS: dict[str, frozenset[str]] = {
    # Created in the database, not yet asked of a host.
    Status.PENDING: frozenset({Status.STARTING, Status.STOPPING}),
    # The host agent is making it; ERROR when it may or may not have.
    Status.STARTING: frozenset({Status.RUNNING, Status.ERROR, Status.MISSING}),
    Status.RUNNING: frozenset({Status.PAUSING, Status.STOPPING, Status.MISSING}),
    # An operation in progress goes on to its end, or back where it came from when it failed.
    Status.PAUSING: frozenset({Status.PAUSED, Status.RUNNING, Status.MISSING}),
    Status.PAUSED: frozenset({Status.RESUMING, Status.STOPPING, Status.MISSING}),
    Status.RESUMING: frozenset({Status.RUNNING, Status.PAUSED, Status.MISSING}),
    Status.STOPPING: frozenset(
        {Status.STOPPED, Status.PENDING, Status.RUNNING, Status.PAUSED, Status.MISSING, Status.ERROR}
    ),
    # Its host stopped reporting it: back to where the host says it is, or destroyed.
    Status.MISSING: frozenset({Status.RUNNING, Status.PAUSED, Status.STOPPING}),
    Status.ERROR: frozenset({Status.STOPPING}),
    # The row stays as a record; nothing follows.
    Status.STOPPED: frozenset(),
}


def can_move(current: str, to: str) -> bool:
    return to in TRANSITIONS[current]


def sources(to: str) -> frozenset[str]:
    """The statuses a capsule may reach `to` from."""
    return frozenset(status for status, targets in TRANSITIONS.items() if to in targets)


# Where a capsule is when its host goes quiet and it becomes `missing`: alive there, or on its
# way. A destroy in progress (`stopping`) goes on to its end instead.
LOST_WITH_HOST = frozenset({Status.STARTING, Status.RUNNING, Status.PAUSING, Status.PAUSED, Status.RESUMING})
# Where a capsule is while it occupies its host (placement counts these).
OCCUPYING = frozenset(Status) - {Status.STOPPED, Status.ERROR}
# Where a terminal may be opened, listed or killed (a paused capsule's processes are frozen, but
# exist).
WITH_PROCESSES = frozenset({Status.RUNNING, Status.PAUSED})
