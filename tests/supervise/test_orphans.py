"""SIGKILL of the helper does not leave cmd running unsupervised (issue 12, item 10).

The real CLI, the real dev-agent, the recorder child and real SIGKILLs.
"""

from __future__ import annotations

import signal
import sys

import psutil
import pytest
from supervised import RECORDER, Run, gone, recorder_cmd, records, wait_records, write_conf
from util import wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the parent-death signal is Linux-only")


def recorders_running(record: str) -> list[int]:
    """Live recorder processes writing to `record` (zombies are not running)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if (str(RECORDER) in cmdline and record in cmdline
                and proc.info["status"] != psutil.STATUS_ZOMBIE):
            found.append(proc.pid)
    return found


def test_sigkill_of_the_helper_stops_cmd_with_its_stop_signal(tmp_path, agent, certs):
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs) +
                      'stop_signal = "SIGINT"\n')
    with Run(tmp_path, conf) as helper:
        pid = wait_records(rec, "ready")[0]["pid"]
        helper.proc.send_signal(signal.SIGKILL)
        helper.proc.wait(10)
        wait_for(lambda: gone(pid), timeout=15, what="cmd gone after the helper's SIGKILL")
    assert [r["name"] for r in records(rec, "signal")] == ["SIGINT"]


def test_a_restart_after_sigkill_leaves_one_copy_of_cmd(tmp_path, agent, certs):
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs))
    with Run(tmp_path, conf) as helper:
        first = wait_records(rec, "ready")[0]["pid"]
        helper.proc.send_signal(signal.SIGKILL)
        helper.proc.wait(10)
    with Run(tmp_path, conf) as again:
        ready = wait_records(rec, "ready", 2)
        second = ready[1]["pid"]
        assert second != first
        wait_for(lambda: gone(first), timeout=15, what="the first copy gone")
        assert set(recorders_running(str(rec))) & {first, second} == {second}
        assert again.proc.poll() is None


def test_cmd_keeps_the_pid_the_helper_spawned(tmp_path, agent, certs):
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs))
    with Run(tmp_path, conf) as helper:
        start = wait_records(rec, "start")[0]
        wait_for(lambda: f"(pid {start['pid']})" in helper.log(), what="the pid logged")
        assert start["pgid"] == start["pid"]
        assert start["ppid"] == helper.proc.pid


def test_a_missing_cmd_is_still_reported_at_once(tmp_path, agent, certs):
    conf = write_conf(tmp_path, agent, certs, 'cmd = "no-such-command-12"\n'
                      'on_cmd_exit = "exit"\n')
    with Run(tmp_path, conf) as helper:
        assert helper.wait(20) == 127
    assert "cannot start cmd no-such-command-12" in helper.log()


def test_the_trampoline_passes_argv_and_environment_through_byte_for_byte(tmp_path):
    import asyncio
    import os

    from helper.supervise.reaper import Reaper

    out = tmp_path / "out"
    odd = "caf\udce9 \u00e9t\u00e9 * $HOME"  # a byte that is not UTF-8, spaces, a glob
    # LANG=C without LC_ALL: Python coerces its own locale (sets LC_CTYPE); cmd must not see it
    env = {"ODD": odd, "LANG": "C", "PATH": os.environ["PATH"]}

    async def scenario() -> int:
        reaper = Reaper()
        try:
            proc = reaper.spawn(["sh", "-c", 'printf "%s|%s|%s" "$1" "$ODD" "$LC_CTYPE" > "$2"',
                                 "sh", odd, str(out)], env, death_signal=signal.SIGTERM)
            return await asyncio.wait_for(proc.exit, 10)
        finally:
            reaper.close()

    assert asyncio.run(scenario()) == 0
    raw = os.fsencode(odd)
    assert out.read_bytes() == raw + b"|" + raw + b"|"
