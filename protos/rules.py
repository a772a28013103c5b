"""The rules the control plane and the host agent share: capsule ids, session tags, window sizes.

One rule for each, checked by both sides, so that what one side accepts the other accepts too.
Ids and tags end up in a Channels group name (`pty.<id>.<tag>`: ASCII letters, digits, '-', '_'
and '.', under 100 characters) and in paths on the host, so neither may hold a '/' or start
with a '.'.
Plain Python: the host agent imports it without Django.
"""

import re
import secrets

SANDBOX_ID_MAX_LENGTH = 32
TAG_MAX_LENGTH = 48
SANDBOX_ID_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{SANDBOX_ID_MAX_LENGTH - 1}}}")
TAG_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{TAG_MAX_LENGTH - 1}}}")

SANDBOX_ID_PREFIX = "cl-"

# gRPC metadata keys both sides read. WriteFile's initial metadata: the file is open and the agent
# takes data. PortForward's trailing metadata: nothing answered on the port (UNAVAILABLE like an
# agent that does not answer, which the control plane must tell apart: a bad gateway, not host down).
WRITE_READY_KEY = "wrenn-write-ready"
PORT_REFUSED_KEY = "wrenn-port-refused"
PTY_TAG_PREFIX = "pty-"

# A terminal's columns and rows: 1 to MAX_WINDOW each (anything larger is a client bug, not a
# screen); a size left out or 0 means the default.
DEFAULT_COLS = 80
DEFAULT_ROWS = 24
MAX_WINDOW = 1000


def is_sandbox_id(value: object) -> bool:
    return isinstance(value, str) and SANDBOX_ID_RE.fullmatch(value) is not None


def is_tag(value: object) -> bool:
    return isinstance(value, str) and TAG_RE.fullmatch(value) is not None


def is_window_size(cols: object, rows: object) -> bool:
    return all(
        isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WINDOW
        for value in (cols, rows)
    )


def bad_sandbox_id(value: str) -> str:
    """Why `value` is not a capsule id, in the words every refusal uses."""
    return (
        f"invalid sandbox_id {value[:80]!r}: use 1 to {SANDBOX_ID_MAX_LENGTH} letters, digits, "
        "'_' or '-', starting with a letter or digit"
    )


def bad_tag(value: str) -> str:
    """Why `value` is not a session tag, in the words every refusal uses."""
    return (
        f"invalid tag {value[:80]!r}: use 1 to {TAG_MAX_LENGTH} letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )


def new_sandbox_id() -> str:
    """A capsule id: `cl-` and 20 hex characters."""
    return SANDBOX_ID_PREFIX + secrets.token_hex(10)


def new_pty_tag() -> str:
    """A terminal session's tag, as the reference makes them: `pty-` and 8 hex characters."""
    return PTY_TAG_PREFIX + secrets.token_hex(4)
