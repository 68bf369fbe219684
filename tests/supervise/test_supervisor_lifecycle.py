"""The supervisor end to end, the child's life: exit status and signal forwarding,
on_cmd_exit = "restart", child hygiene, PID 1 and the subreaper.

The real CLI, the real dev-agent, real children, real signals. The child is
tests/children/recorder.py, which appends what happens to it (its start, the files it saw,
every signal) to a JSON-lines file that the tests read.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from supervised import (
    Run,
    recorder_cmd,
    records,
    signals_of,
    wait_records,
    write_conf,
)
from util import env_without, wait_for

from helper import app, config
from helper.supervise import supervisor
from helper.supervise.restart_policy import RestartPolicy

# --- exit status and signal forwarding -----------------------------------------------------------


@pytest.mark.parametrize(("child_args", "expected"), [
    pytest.param(("--exit-on", "TERM=7"), 7, id="child-exits-7"),
    pytest.param((), 143, id="term-kills-child"),
])
def test_term_is_forwarded_and_the_helper_exits_with_the_childs_status(
        tmp_path, agent, certs, child_args, expected):
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs, *child_args) +
                      'on_cmd_exit = "exit"\n')
    with Run(tmp_path, conf) as helper:
        wait_records(rec, "ready")
        helper.proc.send_signal(signal.SIGTERM)
        assert helper.wait() == expected
        assert signals_of(rec) == ["SIGTERM"]


def test_the_helper_exits_with_the_status_of_a_child_that_exits_on_its_own(
        tmp_path, agent, certs):
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs, "--exit", "7") +
                      'on_cmd_exit = "exit"\n')
    with Run(tmp_path, conf) as helper:
        assert helper.wait() == 7
        assert len(records(rec, "start")) == 1


def test_a_cmd_that_cannot_be_started_exits_127_in_exit_mode(tmp_path, agent, certs):
    conf = write_conf(tmp_path, agent, certs, 'cmd = "/nonexistent/daemon"\n'
                      'on_cmd_exit = "exit"\n')
    with Run(tmp_path, conf) as helper:
        assert helper.wait() == 127
        assert "cannot start cmd /nonexistent/daemon" in helper.log()


def test_ctrl_c_on_a_terminal_reaches_the_child_once(tmp_path, agent, certs):
    # A terminal sends SIGINT to its foreground process group. The child has its own group,
    # so it gets SIGINT once, forwarded by the helper, not a second time from the terminal.
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs))
    with Run(tmp_path, conf, new_session=True) as helper:
        child = wait_records(rec, "ready")[0]["pid"]
        assert os.getpgid(child) == child != os.getpgid(helper.proc.pid)
        os.killpg(helper.proc.pid, signal.SIGINT)
        assert helper.wait() == 0  # on_cmd_exit = "renew": stopped by a signal, exit 0
        assert signals_of(rec) == ["SIGINT"]


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT,
                                 signal.SIGWINCH])
def test_other_signals_are_forwarded_and_the_helper_carries_on(tmp_path, agent, certs, sig):
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs))
    with Run(tmp_path, conf) as helper:
        wait_records(rec, "ready")
        helper.proc.send_signal(sig)
        wait_for(lambda: signals_of(rec) == [sig.name], what=f"{sig.name} forwarded")
        assert helper.proc.poll() is None


def test_a_child_that_ignores_term_is_killed_after_stop_timeout(tmp_path, agent, certs):
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs, "--ignore", "TERM") +
                      'on_cmd_exit = "exit"\nstop_timeout = 0.5\n')
    with Run(tmp_path, conf) as helper:
        child = wait_records(rec, "ready")[0]["pid"]
        sent = time.monotonic()
        helper.proc.send_signal(signal.SIGTERM)
        assert helper.wait() == 128 + signal.SIGKILL
        assert time.monotonic() - sent >= 0.5
        assert signals_of(rec) == ["SIGTERM"]
        assert not psutil.pid_exists(child)
        assert "killing its process group" in helper.log()


# --- on_cmd_exit = "restart" ---------------------------------------------------------------------


def test_a_crashing_child_is_restarted_with_growing_delays(tmp_path, agent, certs):
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs, "--exit", "3") +
                      'on_cmd_exit = "restart"\n')
    with Run(tmp_path, conf) as helper:
        starts = wait_records(rec, "start", 3, timeout=15)
        gaps = [b["mono"] - a["mono"] for a, b in itertools.pairwise(starts)]
        assert gaps[0] >= 1, gaps  # 1 s, then 2 s (plus start-up time)
        assert gaps[1] >= 2, gaps
        assert gaps[1] - gaps[0] > 0.5, gaps
        log = helper.log()
        assert log.index("starting it again in 1 s") < log.index("starting it again in 2 s")
        helper.wait_log("starting it again in 4 s")
        helper.proc.send_signal(signal.SIGTERM)  # while it waits to start the 4th
        assert helper.wait() == 0
        assert len(records(rec, "start")) == 3


def test_restart_gives_up_after_too_many_crashes_with_the_last_status(tmp_path, agent, certs):
    # The real policy gives up after 10 crashes in 5 minutes
    # (tests/supervise/test_restart_policy.py);
    # here the same supervisor runs in-process with a fast policy.
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs, "--exit", "3") +
                      'on_cmd_exit = "restart"\n')
    cfg = config.load(conf)
    status = app.initial_status(cfg)
    core = app.Core(cfg, status=status, features=(supervisor.Supervisor(
        cfg, status, {}, policy=RestartPolicy(initial=0.05, cap=0.2, max_crashes=4)),))

    async def run() -> int:
        return await asyncio.wait_for(core.run(), 30)

    assert asyncio.run(run()) == 3
    starts = records(rec, "start")
    assert len(starts) == 4
    gaps = [b["mono"] - a["mono"] for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 0.05
    assert gaps[1] >= 0.1
    assert gaps[2] >= 0.2
    assert core.status.child_restarts == 3
    assert core.status.child_state == "gave up: exited 3"


# --- child hygiene -------------------------------------------------------------------------------


def _signal_bits(hex_mask: str) -> set[int]:
    mask = int(hex_mask, 16)
    return {n for n in signal.valid_signals() if mask & (1 << (n - 1))}


def test_child_starts_with_an_empty_signal_mask_and_default_dispositions(tmp_path, agent, certs):
    # grep (looked up in PATH, as Go's exec.Command does) prints the signal state it was
    # started with to the helper's stdout. Shells and Python would change it themselves.
    conf = write_conf(tmp_path, agent, certs, 'cmd = "grep"\n'
                      'cmd_args = "-E ^Sig(Blk|Ign): /proc/self/status"\n')
    # The helper runs with SIGALRM blocked and SIGPWR ignored (and Python itself ignores
    # SIGPIPE and SIGXFSZ): none of that may reach the child.
    wrapper = [sys.executable, "-c",
               "import os, signal, sys; "
               "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM]); "
               "signal.signal(signal.SIGPWR, signal.SIG_IGN); "
               "os.execv(sys.executable, sys.argv[1:])"]
    with Run(tmp_path, conf, prefix=wrapper) as helper:
        helper.wait_log("cmd (pid")  # grep has exited
        helper_state = Path(f"/proc/{helper.proc.pid}/status").read_text()
        assert {signal.SIGALRM} <= _signal_bits(_field(helper_state, "SigBlk"))
        assert {signal.SIGPWR, signal.SIGPIPE} <= _signal_bits(_field(helper_state, "SigIgn"))
        child_state = helper.log()
        assert _signal_bits(_field(child_state, "SigBlk")) == set()
        assert _signal_bits(_field(child_state, "SigIgn")) == set()


def _field(status: str, name: str) -> str:
    return next(line.split(":")[1].strip() for line in status.splitlines()
                if line.startswith(f"{name}:"))


def test_child_gets_dev_null_stdin_cmd_env_and_no_notify_socket(tmp_path, agent, certs):
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs,
                      recorder_cmd(rec, certs, "--env", "APP_MODE", "--env", "PATH") +
                      'cmd_env { APP_MODE = "production" }\n')
    env = env_without("NOTIFY_SOCKET", NOTIFY_SOCKET=str(tmp_path / "notify.sock"))
    with Run(tmp_path, conf, env=env):
        start = wait_records(rec, "start")[0]
        assert start["stdin"] == "/dev/null"
        assert start["env"] == {"APP_MODE": "production", "PATH": os.environ["PATH"],
                                "NOTIFY_SOCKET": None}
        assert start["pgid"] == start["pid"]  # its own process group


def test_cmd_stdin_true_gives_the_child_the_helpers_stdin(tmp_path, agent, certs):
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs) + "cmd_stdin = true\n")
    with Run(tmp_path, conf, stdin=subprocess.PIPE) as helper:
        start = wait_records(rec, "start")[0]
        assert start["stdin"] == os.readlink(f"/proc/{helper.proc.pid}/fd/0")
        assert start["stdin"].startswith("pipe:")
        assert helper.proc.stdin is not None
        helper.proc.stdin.close()


def test_one_shot_mode_does_not_start_cmd(tmp_path, agent, certs):
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs))
    with Run(tmp_path, conf, args=["-daemon-mode=false"]) as helper:
        assert helper.wait() == 0
    assert "cmd will be ignored" in helper.log()
    assert not rec.exists()


# --- PID 1 and the subreaper ---------------------------------------------------------------------


def _ns_pid(pid: int) -> int:
    """The pid of host process `pid` inside its innermost PID namespace."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid for {pid}")


def _gone(pid: int) -> bool:
    """True once `pid` no longer exists (a zombie still exists: it has not been reaped)."""
    return not psutil.pid_exists(pid)


def _unshare_works() -> bool:
    try:
        result = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                                capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs root and unshare --pid")
def test_as_pid_1_it_forwards_signals_reaps_orphans_and_passes_the_exit_status_on(
        tmp_path, agent, certs):
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs, "--daemonize", "1") +
                      'on_cmd_exit = "exit"\n')
    unshare = ["unshare", "--pid", "--fork", "--mount-proc"]
    with Run(tmp_path, conf, prefix=unshare) as run:
        child = wait_records(rec, "ready")[0]
        grandchild = wait_records(rec, "grandchild")[0]
        pid1 = wait_for(lambda: psutil.Process(run.proc.pid).children(), what="PID 1")[0]
        assert _ns_pid(pid1.pid) == 1
        assert "running as PID 1" in run.log()
        # the orphaned grandchild was re-parented to the helper (PID 1); when it exits, the
        # helper reaps it: no zombie is left
        orphan = next(p for p in pid1.children() if _ns_pid(p.pid) == grandchild["pid"])
        assert child["pid"] != grandchild["pid"]
        orphan.send_signal(signal.SIGTERM)
        wait_for(lambda: _gone(orphan.pid), what="the orphan reaped")
        assert [p for p in pid1.children() if p.status() == psutil.STATUS_ZOMBIE] == []
        # SIGTERM to PID 1 (the kernel drops it unless PID 1 handles it) reaches the child;
        # the child's status (killed by SIGTERM) comes out of unshare
        pid1.send_signal(signal.SIGTERM)
        assert run.wait() == 128 + signal.SIGTERM
        assert signals_of(rec) == ["SIGTERM"]


def test_not_pid_1_it_adopts_reaps_and_stops_daemonized_grandchildren(tmp_path, agent, certs):
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs, "--daemonize", "2") +
                      "stop_timeout = 2\n")
    with Run(tmp_path, conf) as helper:
        child = wait_records(rec, "ready")[0]["pid"]
        first, second = (r["pid"] for r in wait_records(rec, "grandchild", 2))
        # both left their parent (setsid + double fork) and were adopted by the helper,
        # which is a child subreaper
        for pid in (first, second):
            assert psutil.Process(pid).ppid() == helper.proc.pid
            assert os.getsid(pid) != os.getsid(child)  # their own sessions
            assert os.getpgid(pid) != child  # so not in cmd's process group
        os.kill(first, signal.SIGTERM)
        wait_for(lambda: _gone(first), what="the first grandchild reaped")
        assert helper.proc.poll() is None
        helper.proc.send_signal(signal.SIGTERM)
        assert helper.wait() == 0
        wait_for(lambda: _gone(second) or psutil.Process(second).status() == "zombie",
                 what="the second grandchild stopped with the helper")
        assert "stopping 1 leftover descendant process(es)" in helper.log()
