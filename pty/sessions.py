"""Which connection of this process leads (reads the gRPC stream of) each terminal session.

A connection that joins a session already led here only joins its group, so
the session is read once however many viewers this process holds. When the
leader leaves, the longest-attached remaining viewer takes over the stream.
"""

from __future__ import annotations

from typing import Protocol


class Member(Protocol):
    def take_lead(self) -> None: ...


class LocalSessions:
    def __init__(self) -> None:
        self._members: dict[str, list[Member]] = {}

    def join(self, group: str, member: Member) -> bool:
        """Adds a member; True when it is the first here and must lead."""
        members = self._members.setdefault(group, [])
        members.append(member)
        return len(members) == 1

    def leave(self, group: str, member: Member) -> Member | None:
        """Removes a member; returns the viewer that must take over, if the leader left."""
        members = self._members.get(group)
        if not members or member not in members:
            return None
        was_leader = members[0] is member
        members.remove(member)
        if not members:
            del self._members[group]
            return None
        return members[0] if was_leader else None

    def forget(self, group: str) -> None:
        """The session ended: nobody takes over."""
        self._members.pop(group, None)

    def count(self, group: str) -> int:
        return len(self._members.get(group, ()))


registry = LocalSessions()
