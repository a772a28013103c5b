"""Choosing the pause mechanism, and the process trees the signal fallback walks (in-process)."""

from __future__ import annotations

import pytest

from hostagent import freezer
from hostagent.procs import Proc, process_trees


@pytest.fixture
def no_cgroups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freezer, "_mounts", lambda: [])


@pytest.mark.usefixtures("no_cgroups")
def test_auto_without_a_cgroup_freezer_falls_back_to_signals() -> None:
    assert isinstance(freezer.choose_freezer("auto", "wrenn-hostagent"), freezer.SignalFreezer)


@pytest.mark.usefixtures("no_cgroups")
@pytest.mark.parametrize("mechanism", ["cgroup2", "cgroup1"])
def test_an_unavailable_mechanism_asked_for_refuses(mechanism: str) -> None:
    with pytest.raises(freezer.FreezerUnavailable) as caught:
        freezer.choose_freezer(mechanism, "wrenn-hostagent")
    assert str(caught.value) == f"the {mechanism} freezer cannot work here: no such hierarchy is mounted"


@pytest.mark.parametrize("root", ["../escape", "/absolute", "a/../b", ""])
def test_a_cgroup_root_must_be_a_relative_path_of_names(root: str) -> None:
    with pytest.raises(freezer.FreezerUnavailable, match="invalid cgroup root"):
        freezer.choose_freezer("signals", root)


def test_process_trees_list_parents_before_children_and_include_session_orphans() -> None:
    table = {
        1: Proc(1, "S", 0, 1, 1),
        # A shell (session 100), its job, the job's child, and an orphan of the session.
        100: Proc(100, "S", 50, 100, 100),
        130: Proc(130, "S", 120, 120, 100),
        120: Proc(120, "S", 100, 120, 100),
        110: Proc(110, "S", 1, 110, 100),
        # Someone else's.
        200: Proc(200, "S", 1, 200, 200),
    }
    assert process_trees([100], table) == [100, 110, 120, 130]
