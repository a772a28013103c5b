"""The agent's side of the file helper's protocol, in-process: paths checked and cleaned, and a
helper's answers taken as hostile input (a capsule's code can trace and rewrite its helper)."""

from __future__ import annotations

import pytest

from hostagent.errors import InvalidArgument
from hostagent.files import HelperBroken, entry_message, resolve_path


@pytest.mark.parametrize(
    ("path", "user", "resolved"),
    [
        ("notes.txt", "root", "/root/notes.txt"),
        ("notes.txt", "user", "/home/user/notes.txt"),
        ("../../../../etc/shadow", "root", "/etc/shadow"),
        ("/root/a/../b", "root", "/root/b"),
        ("//tmp///x/", "root", "/tmp/x"),
        ("/..", "root", "/"),
    ],
)
def test_paths_are_cleaned_inside_the_capsules_view(path: str, user: str, resolved: str) -> None:
    assert resolve_path(path, user) == resolved


def test_a_hostile_entry_is_made_harmless() -> None:
    entry = entry_message(
        {
            "name": "\udcff-not-utf8",
            "path": 42,
            "type": "socket",
            "size": -5,
            "mode": 1 << 40,
            "permissions": "x" * 100,
            "owner": ["root"],
            "modified_at": True,
        }
    )
    assert entry.name == "\ufffd-not-utf8"
    assert (entry.path, entry.type, entry.size, entry.mode, entry.owner) == ("", "file", 0, 0o7777, "")
    assert len(entry.permissions) == 10
    assert entry.modified_at == 0


def test_an_entry_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(HelperBroken):
        entry_message(["not", "an", "entry"])


def test_an_empty_path_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="path is required"):
        resolve_path("", "root")
