"""The rules the control plane and the host agent share (protos/rules.py)."""

import pytest
from channels.layers import InMemoryChannelLayer

from capsules.models import Sandbox
from protos import rules
from pty.stream import group_name

LONGEST_ID = "c" * rules.SANDBOX_ID_MAX_LENGTH
LONGEST_TAG = "t" * rules.TAG_MAX_LENGTH


def test_the_longest_id_and_tag_still_make_a_valid_group_name() -> None:
    name = group_name(LONGEST_ID, LONGEST_TAG)
    assert InMemoryChannelLayer().require_valid_group_name(name)


def test_the_id_rule_fits_the_database_column() -> None:
    assert Sandbox._meta.get_field("id").max_length == rules.SANDBOX_ID_MAX_LENGTH


def test_new_ids_and_tags_follow_the_rules() -> None:
    assert rules.is_sandbox_id(rules.new_sandbox_id())
    assert rules.is_tag(rules.new_pty_tag())


@pytest.mark.parametrize("value", ["cl-0123", "a", LONGEST_ID, "A_b-9"])
def test_ids_accepted(value: str) -> None:
    assert rules.is_sandbox_id(value)


@pytest.mark.parametrize(
    "value", ["", "../etc", ".hidden", "-lead", "a/b", "a.b", LONGEST_ID + "c", "cl-é", "a\n", None, 7]
)
def test_ids_refused(value: object) -> None:
    assert not rules.is_sandbox_id(value)


@pytest.mark.parametrize("value", ["pty-1a2b3c4d", "proc-1.2", "x", LONGEST_TAG])
def test_tags_accepted(value: str) -> None:
    assert rules.is_tag(value)


@pytest.mark.parametrize("value", ["", "..", ".x", "a/b", "a b", LONGEST_TAG + "t", "pty-\u00e9", None])
def test_tags_refused(value: object) -> None:
    assert not rules.is_tag(value)


@pytest.mark.parametrize(
    ("cols", "rows", "ok"),
    [
        (1, 1, True),
        (1000, 1000, True),
        (0, 24, False),
        (80, 1001, False),
        (True, 24, False),
        ("80", 24, False),
    ],
)
def test_window_sizes(cols: object, rows: object, ok: bool) -> None:
    assert rules.is_window_size(cols, rows) is ok


def test_refusals_name_the_rule() -> None:
    assert rules.bad_tag("a/b") == (
        "invalid tag 'a/b': use 1 to 48 letters, digits, '.', '_' or '-', starting with a letter or digit"
    )
    assert rules.bad_sandbox_id("../etc").startswith("invalid sandbox_id '../etc': use 1 to 32 letters")
