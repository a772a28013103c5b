"""Who may be a peer of a terminal session and who may only observe, and the words of each refusal.

A peer types, resizes and kills; an observer gets every byte and nothing else. Team members and
full-scope API keys are peers unless they ask to observe; API keys with the `terminal:observe`
scope and share links may only observe; staff on the admin route observe unless they take
control explicitly (an audited action).
"""

from __future__ import annotations

from .auth import Caller
from .protocol import OBSERVER, PEER

INPUT_REFUSED = "input refused: this viewer is an observer (read-only)"
RESIZE_REFUSED = "resize refused: an observer never changes the terminal's size"
KILL_REFUSED = "kill refused: an observer cannot kill the session"

SHARE_CAPSULE = "this share link is not valid for this capsule"
SHARE_START = "a share link only watches its own session: 'start' is not allowed"
SHARE_PEER = "a share link may only observe: connect with mode 'observer'"
OBSERVE_KEY_START = "this API key has the terminal:observe scope: it may watch sessions, not start one"
OBSERVE_KEY_PEER = "this API key has the terminal:observe scope: it may only connect as an observer"

NOT_PEER_CONTROL = "control refused: only a peer can change another viewer's mode"
NOT_PEER_REVOKE = "revoke refused: only a peer can revoke a share link"


def share_session(tag: str) -> str:
    return f"this share link is only valid for session {tag}"


def default_mode(caller: Caller, admin: bool) -> str:
    """The mode of a `connect` that names none."""
    return OBSERVER if caller.observe_only or admin else PEER


def may_control(caller: Caller) -> bool:
    """Whether the caller may ever be a peer (on the admin route, by taking control)."""
    return not caller.observe_only


def refuse_peer(caller: Caller) -> str:
    return SHARE_PEER if caller.share_id else OBSERVE_KEY_PEER


def refuse_start(caller: Caller) -> str | None:
    if caller.share_id:
        return SHARE_START
    if caller.observe_only:
        return OBSERVE_KEY_START
    return None


def refuse_session(caller: Caller, tag: str) -> str | None:
    """Why the caller may not join session `tag` at all (a share link grants one session)."""
    if caller.share_id and tag != caller.share_tag:
        return share_session(caller.share_tag)
    return None


def a(mode: str) -> str:
    return "a peer" if mode == PEER else "an observer"


def no_viewer(viewer_id: str) -> str:
    return f"no viewer {viewer_id[:64]} in this session"


def only_observes(viewer_id: str, label: str) -> str:
    return f"control refused: viewer {viewer_id} ({label}) may only observe"


def no_link(viewer_id: str) -> str:
    return f"revoke refused: viewer {viewer_id} did not come in on a share link"
