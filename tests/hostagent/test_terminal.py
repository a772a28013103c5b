"""PTY sessions in both runtimes: output, input, exit codes, resize, kill, attach, throughput."""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import pytest

from tests.hostagent.conftest import writable_dir
from tests.support.hostagent import HostAgentProcess, attach_terminal, start_terminal
from tests.support.polling import wait_until

pytestmark = pytest.mark.timeout(60)


async def test_started_event_names_the_tag_and_a_host_pid(stub: Any, capsule: str) -> None:
    terminal, started = await start_terminal(stub, capsule, "/bin/sh", "-c", "exit 0", tag="pty-0000abcd")
    assert started.tag == "pty-0000abcd"
    assert started.pid > 1
    await terminal.wait_exit()


async def test_input_reaches_the_shell_and_its_output_comes_back(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/bash")
    await terminal.send(b"echo hello-$((6*7))\n")
    await terminal.expect(b"hello-42")
    await terminal.kill()


async def test_exit_status_is_reported(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/bash", "-c", "exit 3")
    assert await terminal.wait_exit() == 3


async def test_output_written_just_before_exit_arrives_before_exited(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", "printf last-words")
    assert await terminal.wait_exit() == 0
    assert terminal.output.endswith(b"last-words")


async def test_killed_session_exits_with_128_plus_sigkill(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", "echo ready; exec sleep 1000")
    await terminal.expect(b"ready")
    await terminal.kill()
    assert await terminal.wait_exit() == 137


async def test_resize_is_seen_by_stty(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(
        stub, capsule, "/bin/sh", "-c", "read line; stty size", cols=90, rows=20
    )
    await terminal.resize(cols=123, rows=45)
    await terminal.send(b"\n")
    await terminal.expect(b"45 123")


async def test_size_given_at_start_is_seen_by_stty(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", "stty size", cols=132, rows=43)
    await terminal.wait_exit()
    assert b"43 132" in terminal.output


async def test_default_size_is_80x24(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", "stty size")
    await terminal.wait_exit()
    assert b"24 80" in terminal.output


def _pids_running(marker: str) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
                with open(f"/proc/{name}/stat", "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if cmdline.strip() == f"sleep {marker}" and state != b"Z":
                pids.append(int(name))
    return pids


async def test_kill_ends_background_jobs_in_other_process_groups(stub: Any, capsule: str) -> None:
    marker = str(4000 + os.getpid() % 1000) + ".5"
    # `set -m` puts the background sleep in its own process group: only the session scan finds it.
    script = f"set -m; sleep {marker} & echo started-bg; wait"
    terminal, _ = await start_terminal(stub, capsule, "/bin/bash", "-c", script)
    await terminal.expect(b"started-bg")
    await wait_until(lambda: bool(_pids_running(marker)))
    await terminal.kill()
    assert await terminal.wait_exit() == 137
    await wait_until(lambda: not _pids_running(marker))


async def test_second_stream_on_the_same_tag_sees_the_output(stub: Any, capsule: str) -> None:
    first, _ = await start_terminal(stub, capsule, "/bin/cat")
    second = await attach_terminal(stub, capsule, first.tag)
    await first.send(b"both-see-this\n")
    await first.expect(b"both-see-this")
    await second.expect(b"both-see-this")
    await first.kill()
    assert await second.wait_exit() == 137


async def test_session_survives_the_starting_stream_being_cancelled(stub: Any, capsule: str) -> None:
    first, _ = await start_terminal(stub, capsule, "/bin/cat")
    first.call.cancel()
    later = await attach_terminal(stub, capsule, first.tag)
    await first.send(b"still-here\n")
    await later.expect(b"still-here")
    await later.kill()
    assert await later.wait_exit() == 137


async def test_attach_after_exit_gets_the_exit_code(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", "exit 5")
    await terminal.wait_exit()
    late = await attach_terminal(stub, capsule, terminal.tag)
    event = await late.next_event()
    assert event.WhichOneof("event") == "exited"
    assert event.exited.exit_code == 5


async def test_a_megabyte_of_raw_bytes_arrives_exactly_with_contiguous_offsets(
    stub: Any, agent: HostAgentProcess, capsule: str
) -> None:
    blob = os.urandom(1_000_000)
    (writable_dir(agent, capsule, "home") / "blob").write_bytes(blob)
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", "stty raw -echo && cat blob")
    assert await terminal.wait_exit() == 0
    assert terminal.first_offset == 0
    assert bytes(terminal.output) == blob


async def test_a_slow_reader_gets_every_byte(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", "stty raw -echo && seq 1 200000")
    await asyncio.sleep(0.5)  # let the agent's queue fill up, so the writer has to block
    assert await terminal.wait_exit() == 0
    expected = "".join(f"{n}\n" for n in range(1, 200001)).encode()
    assert bytes(terminal.output) == expected


async def test_input_arrives_complete_and_in_order(stub: Any, capsule: str) -> None:
    script = "stty raw -echo && echo ready && head -c 300000"
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", script)
    await terminal.expect(b"ready\n")
    chunks = [f"{n:05d}".encode() * 600 for n in range(100)]
    for chunk in chunks:
        await terminal.send(chunk)
    assert await terminal.wait_exit() == 0
    assert bytes(terminal.output) == b"ready\n" + b"".join(chunks)


async def test_envs_are_added_to_the_environment(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(
        stub, capsule, "/bin/sh", "-c", 'echo "v=$GREETING"', envs={"GREETING": "hi there"}
    )
    await terminal.wait_exit()
    assert b"v=hi there" in terminal.output


async def test_relative_cwd_is_inside_the_capsule_home(
    stub: Any, agent: HostAgentProcess, capsule: str
) -> None:
    (writable_dir(agent, capsule, "home") / "sub").mkdir()
    (writable_dir(agent, capsule, "home") / "sub" / "marker-file").write_text("x")
    terminal, _ = await start_terminal(stub, capsule, "/bin/ls", cwd="sub")
    await terminal.wait_exit()
    assert b"marker-file" in terminal.output


async def test_term_and_lang_are_set(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", 'echo "[$TERM] [$LANG]"')
    await terminal.wait_exit()
    assert re.search(rb"\[xterm-256color\] \[C\.UTF-8\]", terminal.output)


async def test_a_stuck_reader_throttles_the_process_instead_of_buffering(stub: Any, capsule: str) -> None:
    stuck, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", "stty raw -echo && exec yes")
    await asyncio.sleep(2)  # `yes` would write tens of MiB in this time if nothing held it back
    watcher = await attach_terminal(stub, capsule, stuck.tag)
    stuck.call.cancel()  # the terminal is read again once the stuck stream goes away
    await watcher.next_event()
    assert watcher.first_offset is not None
    # What the stuck stream's queue and gRPC's flow-control windows hold: a few MiB.
    assert watcher.first_offset < 32 * 1024 * 1024
    assert set(bytes(watcher.output)) <= set(b"y\n")
    await watcher.kill()


async def test_exit_is_reported_while_a_background_process_holds_the_terminal(
    stub: Any, capsule: str
) -> None:
    # The background sleep ignores the hangup and keeps the terminal open after the shell exits.
    script = "trap '' HUP; sleep 3 & echo parent-done; exit 6"
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", script)
    assert await terminal.wait_exit() == 6
    assert b"parent-done" in terminal.output


async def test_an_interactive_shell_can_exec_another_program(stub: Any, capsule: str) -> None:
    """`exec` hands the terminal back to the shell's original foreground group, which must exist
    where the shell runs (in the bwrap runtime: inside its pid namespace)."""
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh")
    await terminal.send(b"exec /bin/sh -c 'echo replaced-$((1+1)); exit 4'\n")
    await terminal.expect(b"replaced-2")
    assert await terminal.wait_exit() == 4
    assert b"Cannot set tty process group" not in terminal.output
