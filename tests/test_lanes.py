"""The test lanes (tests/support/lanes.py) catch a mis-marked test: each case is a small suite, run
in this process by pytester with this repository's lane hooks and markers."""

from __future__ import annotations

import sys

import pytest

from tests.support.hostagent import REPO_ROOT

pytest_plugins = ["pytester"]

HOOKS = """
from tests.conftest import (
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_runtest_makereport,
    pytest_runtest_protocol,
)
"""
HOSTAGENT_HELP = f"[{sys.executable!r}, '-m', 'hostagent', '--help'], cwd={str(REPO_ROOT)!r}"


@pytest.fixture
def suite(pytester: pytest.Pytester, request: pytest.FixtureRequest) -> pytest.Pytester:
    """A project with the lane hooks and the markers pyproject.toml registers."""
    markers = "\n    ".join(request.config.getini("markers"))
    pytester.makeini(
        "[pytest]\n"
        "addopts = --strict-markers -p no:django -p no:asyncio -p no:cacheprovider\n"
        f"markers =\n    {markers}\n"
    )
    pytester.makeconftest(HOOKS)
    return pytester


def selected(suite: pytest.Pytester, expression: str) -> list[str]:
    result = suite.runpytest("--collect-only", "-q", "-m", expression)
    return [line.rpartition("::")[2] for line in result.stdout.lines if "::" in line]


def test_each_test_gets_the_lane_of_its_folder_and_fixtures(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_plain="def test_plain(): pass",
        test_fixtures="""
            import pytest

            @pytest.fixture
            def agent(): pass

            @pytest.fixture
            def guarded_agent(): pass

            @pytest.fixture
            def capsule(agent): pass  # a fixture that uses the agent

            @pytest.fixture
            def flow_stack(): pass

            def test_agent(agent): pass
            def test_named(guarded_agent): pass
            def test_through_a_fixture(capsule): pass
            def test_stack(flow_stack): pass
            def test_agent_dir(agent_dir): pass

            @pytest.fixture
            def agent_dir(tmp_path): return tmp_path  # not an agent: the name does not end so
        """,
    )
    suite.makepyfile(**{"tests/integration/test_in_integration": "def test_integration(): pass"})
    suite.makepyfile(**{"tests/browser/test_in_browser": "def test_browser(): pass"})
    assert selected(suite, "unit") == ["test_agent_dir", "test_plain"]
    assert selected(suite, "agent") == ["test_agent", "test_named", "test_through_a_fixture"]
    assert selected(suite, "stack") == ["test_stack", "test_integration"]
    assert selected(suite, "browser") == ["test_browser"]
    assert selected(suite, "not (unit or agent or stack or browser)") == []


@pytest.mark.parametrize(
    ("start", "what"),
    [
        ("subprocess.run(['touch', MARKER])", "touch"),
        ("subprocess.Popen(['touch', MARKER]).wait()", "touch"),
        ("asyncio.run(asyncio.create_subprocess_exec('touch', MARKER))", "touch"),
        ("os.system('touch ' + MARKER)", "os.system()"),
        ("os.fork() or os._exit(0)", "os.fork()"),
    ],
)
def test_a_unit_test_that_starts_a_process_fails_before_it_runs(
    suite: pytest.Pytester, start: str, what: str
) -> None:
    marker = suite.path / "ran"
    suite.makepyfile(
        f"""
        import asyncio, os, subprocess

        MARKER = {str(marker)!r}

        def test_starts():
            {start}
        """
    )
    result = suite.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [f"*a test in the unit lane (no process) started '{what}*': give it the lane it needs*"]
    )
    assert not marker.exists()


def test_a_refusal_the_test_swallows_still_fails_it(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        import subprocess

        def test_swallows():
            try:
                subprocess.run(["true"])
            except BaseException:
                pass
        """
    )
    result = suite.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*a test in the unit lane (no process) started 'true'*"])


def test_an_agent_test_may_start_host_agents_only(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        import subprocess, sys
        import pytest

        @pytest.mark.agent
        def test_other():
            subprocess.run([sys.executable, "-c", "pass"])

        @pytest.fixture
        def agent(): pass

        def test_other_beside_the_agent_fixture(agent):
            subprocess.run(["true"])
        """
    )
    result = suite.runpytest()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*a test in the agent lane (host agents only) started '*python* -c pass'*"])
    result.stdout.fnmatch_lines(["*a test in the agent lane (host agents only) started 'true'*"])


@pytest.mark.agent  # the passing case starts a real host agent process (its --help)
def test_a_mark_above_what_the_test_starts_fails_it(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        f"""
        import subprocess
        import pytest

        @pytest.mark.agent
        def test_needs_the_mark():
            subprocess.run({HOSTAGENT_HELP}, capture_output=True, check=True)

        @pytest.mark.agent
        def test_starts_nothing():
            pass

        @pytest.mark.stack
        def test_starts_an_agent_only():
            subprocess.run({HOSTAGENT_HELP}, capture_output=True, check=True)

        @pytest.mark.agent
        def test_skipped():
            pytest.skip("nothing to check")
        """
    )
    result = suite.runpytest("-rA")
    result.assert_outcomes(passed=3, skipped=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*test_starts_nothing: marked agent, but it started no process that needs it: it belongs to unit",
            "*test_starts_an_agent_only: marked stack, but it started no process that needs it: "
            "it belongs to agent",
        ],
        consecutive=False,
    )


@pytest.mark.parametrize(
    ("marks", "problem"),
    [
        (["unit"], "marked unit, but its folder or fixtures need agent"),
        (["agent", "stack"], "marked agent and stack; a test has one lane"),
    ],
)
def test_marks_that_contradict_the_lane_stop_the_run(
    suite: pytest.Pytester, marks: list[str], problem: str
) -> None:
    decorators = "".join(f"@pytest.mark.{mark}\n" for mark in marks)
    suite.makepyfile(
        f"import pytest\n\n@pytest.fixture\ndef agent(): pass\n\n{decorators}def test_marked(agent): pass\n"
    )
    result = suite.runpytest("--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*test_marked: {problem}"])
