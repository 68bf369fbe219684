"""Children that misbehave (issue 8, item 7): a child in a crash loop, a child that ignores
SIGTERM, and a grandchild that daemonizes and ignores SIGTERM too. The helper keeps its
identity fresh through all of it, never spins, leaves no zombie, and when it stops nothing
it started is left running. The real CLI, real children, real signals.

tests/supervise/test_supervisor_lifecycle.py proves the supervisor's own rules (delays, exit codes,
forwarding);
these tests prove what the faults do not break.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
from relutil import (
    RECORDER,
    cmd_lines,
    consistent_serial,
    first_write,
    gone,
    health_block,
    http_get,
    metric_samples,
    records,
    serial_of,
    write_conf,
)
from util import HelperProcess, free_port, wait_for

from helper.devagent import DevAgentThread

STUBBORN = Path(__file__).resolve().parent / "children" / "stubborn.py"


def zombies_of(pid: int) -> list[int]:
    zombies = []
    for child in psutil.Process(pid).children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                zombies.append(child.pid)
        except psutil.NoSuchProcess:
            pass  # reaped meanwhile
    return zombies


def assert_zombies_are_reaped(pid: int, within: float = 5.0) -> None:
    """Every child of `pid` that is a zombie now is reaped within `within` seconds. (A
    child that has just exited is a zombie for the instant before the helper's SIGCHLD
    handling reaps it: seeing one is not a leak; one that stays is.)"""
    seen = set(zombies_of(pid))
    wait_for(lambda: not seen & set(zombies_of(pid)), within,
             f"zombies {sorted(seen)} reaped")


def test_a_child_in_a_crash_loop_neither_spins_nor_stops_the_rotations(
        tmp_path: Path, certs: Path, agent: DevAgentThread) -> None:
    rec = tmp_path / "child.jsonl"
    port = free_port()
    conf = write_conf(tmp_path, agent.socket_path, certs,
                      cmd_lines(RECORDER, "--record", str(rec), "--exit", "3")
                      + 'on_cmd_exit = "restart"\n' + health_block(port))
    with HelperProcess("-config", str(conf), log=tmp_path / "helper.log") as helper:
        first_write(certs)
        proc = psutil.Process(helper.proc.pid)
        wait_for(lambda: records(rec, "start"), 10, "the first start")
        times = proc.cpu_times()
        cpu0, wall0 = times.user + times.system, time.monotonic()
        for _ in range(2):  # the identity keeps rotating while the child crashes
            good = agent.rotate()
            wait_for(lambda g=good: consistent_serial(certs) == serial_of(g), 10, "rotation")
        wait_for(lambda: len(records(rec, "start")) >= 3, 15, "two restarts")
        times = proc.cpu_times()
        cpu, wall = times.user + times.system - cpu0, time.monotonic() - wall0
        assert wall > 2.5  # 1 s then 2 s between starts: backoff, not a spin
        assert cpu < 0.1 * wall, (cpu, wall)
        assert_zombies_are_reaped(helper.proc.pid)
        assert metric_samples(port, "child_restarts_total")[""] >= 2
        live = http_get(port, "/live")
        assert live is not None
        assert live[0] == 200  # the child's trouble is not the identity's
        assert helper.proc.poll() is None
        assert helper.stop() == 0


def test_a_child_and_its_daemonized_grandchild_that_ignore_term_are_killed_with_the_helper(
        tmp_path: Path, certs: Path, agent: DevAgentThread) -> None:
    rec = tmp_path / "stubborn.jsonl"
    conf = write_conf(tmp_path, agent.socket_path, certs,
                      cmd_lines(STUBBORN, str(rec)) + "stop_timeout = 0.5\n")
    with HelperProcess("-config", str(conf), log=tmp_path / "helper.log") as helper:
        first_write(certs)
        child = wait_for(lambda: records(rec, "ready"), 10, "the child")[0]["pid"]
        grandchild = wait_for(lambda: records(rec, "grandchild"), 10, "the grandchild")[0]["pid"]
        # adopted by the helper (a child subreaper); the intermediate process was reaped
        assert psutil.Process(grandchild).ppid() == helper.proc.pid
        assert_zombies_are_reaped(helper.proc.pid)
        good = agent.rotate()  # a stubborn child does not hold up the identity
        wait_for(lambda: consistent_serial(certs) == serial_of(good), 10, "rotation")
        sent = time.monotonic()
        helper.proc.send_signal(signal.SIGTERM)
        code = helper.proc.wait(15)
        took = time.monotonic() - sent
        assert code == 0, helper.output()
        assert took >= 0.5  # the child had its stop_timeout
        assert took < 5, took  # and then SIGKILL: the helper did not hang on it
        wait_for(lambda: gone(child) and gone(grandchild), 5, "nothing left running")
