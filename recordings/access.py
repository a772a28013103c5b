"""Who may read a recording outside their own teams: staff with the admin's permission to view
recordings, not every staff account, since a recording can hold what was typed. The API's
recording endpoints and the playback page both ask here."""

from typing import Any

VIEW_PERMISSION = "recordings.view_recording"


def can_view_any(user: Any) -> bool:
    """Whether `user` (signed in) may read every team's recordings."""
    return bool(getattr(user, "is_staff", False) and user.has_perm(VIEW_PERMISSION))
