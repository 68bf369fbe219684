"""Starting children and reading their exit: real processes through the Reaper."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from helper.supervise.child import (
    CATCHABLE_SIGNALS,
    child_environment,
    describe_exit,
    exit_code,
    parse_pid,
)
from helper.supervise.external import read_pid_file
from helper.supervise.reaper import Reaper


@pytest.mark.parametrize(("status", "code", "text"), [
    (0, 0, "exited 0"),
    (7 << 8, 7, "exited 7"),
    (int(signal.SIGTERM), 143, "killed by SIGTERM"),
    (int(signal.SIGKILL), 137, "killed by SIGKILL"),
])
def test_exit_status_follows_the_shell_convention(status, code, text):
    assert exit_code(status) == code
    assert describe_exit(status) == text


def test_child_environment_drops_notify_socket_and_layers_extras():
    base = {"PATH": "/bin", "NOTIFY_SOCKET": "/run/systemd/notify", "A": "base"}
    env = child_environment(base, {"A": "cmd_env", "B": "b"}, {"B": "feature"})
    assert env == {"PATH": "/bin", "A": "cmd_env", "B": "feature"}


def test_catchable_signals_leave_out_kill_and_stop():
    assert signal.SIGKILL not in CATCHABLE_SIGNALS
    assert signal.SIGSTOP not in CATCHABLE_SIGNALS
    assert {signal.SIGPIPE, signal.SIGTERM, signal.SIGRTMIN} <= CATCHABLE_SIGNALS


@pytest.mark.parametrize(("text", "pid"), [
    ("123\n", 123), ("  42  ", 42), ("7", 7),
    ("4711\n/var/lib/postgresql/data\n1700000000\n5432\n", 4711),  # postmaster.pid
])
def test_parse_pid(text, pid):
    assert parse_pid(text) == pid


@pytest.mark.parametrize(("text", "problem"), [
    ("", "empty"), ("\n", "empty"), ("abc", "no pid"), ("0", "not a process"),
    ("-1", "no pid"), ("12 13", "no pid"), ("١٢", "no pid"),
])
def test_parse_pid_refuses_what_is_not_one_process(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_pid(text)


def test_a_pid_file_naming_the_helper_itself_is_refused(tmp_path):
    path = tmp_path / "self.pid"
    path.write_text(f"{os.getpid()}\n")
    with pytest.raises(ValueError, match="own pid"):
        read_pid_file(str(path))


def test_the_reaper_reports_exit_statuses_and_reaps_orphans():
    async def scenario() -> tuple[int, int, int]:
        reaper = Reaper()
        reaper.start()
        try:
            exits = reaper.spawn(["sh", "-c", "exit 3"], dict(os.environ))
            killed = reaper.spawn([sys.executable, "-c",
                                   "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"],
                                  dict(os.environ))
            # a grandchild that outlives its parent: re-parented to us (subreaper), reaped
            orphaner = reaper.spawn(["sh", "-c", "sh -c 'read x' </dev/null & exit 0"],
                                    dict(os.environ))
            codes = [exit_code(await asyncio.wait_for(p.exit, 10))
                     for p in (exits, killed, orphaner)]
            deadline = asyncio.get_running_loop().time() + 10
            while reaper.orphans_reaped < 1 and asyncio.get_running_loop().time() < deadline:
                await _tick()
            return codes[0], codes[1], reaper.orphans_reaped
        finally:
            reaper.close()

    assert asyncio.run(scenario()) == (3, 143, 1)


async def _tick() -> None:
    """One turn of the event loop, so the SIGCHLD callback can run."""
    fut = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(fut.set_result, None)
    await fut


def test_a_command_that_does_not_exist_raises_at_spawn():
    async def scenario() -> None:
        reaper = Reaper()
        try:
            reaper.spawn(["/nonexistent/program"], {})
        finally:
            reaper.close()

    with pytest.raises(FileNotFoundError):
        asyncio.run(scenario())
