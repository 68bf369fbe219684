"""The supervisor end to end, on rotations: renew_signal, the reload-command pattern,
renew_action = "restart", reload_cmd, pid_file_name, and reloads that never pile up.

The real CLI, the real dev-agent, real children, real signals. The child is
tests/children/recorder.py, which appends what happens to it (its start, the files it saw,
every signal) to a JSON-lines file that the tests read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
from supervised import (
    RECORDER,
    Run,
    hcl,
    recorder_cmd,
    records,
    serial_of,
    sha256,
    signals_of,
    wait_records,
    write_conf,
)
from util import leaf_serial, wait_for

# --- Go-compatible behaviour ---------------------------------------------------------------------


def test_child_starts_after_the_files_exist_and_gets_renew_signal_only_when_files_change(
        tmp_path, agent, certs):
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs) +
                      'renew_signal = "SIGHUP"\nreload_debounce = 0.05\n')
    with Run(tmp_path, conf) as helper:
        start = wait_records(rec, "start")[0]
        assert start["cert_exists"] is True
        assert start["cert_sha256"] == sha256(certs / "svid.pem")
        wait_records(rec, "ready")

        serial = serial_of(agent.rotate())
        wait_for(lambda: signals_of(rec) == ["SIGHUP"], what="SIGHUP after a rotation")
        assert leaf_serial(certs / "svid.pem") == serial

        agent.push(agent.current)  # the same SVID again: nothing changes on disk
        helper.wait_log("unchanged on disk")
        agent.rotate()
        wait_for(lambda: len(signals_of(rec)) == 2, what="second SIGHUP")
        assert signals_of(rec) == ["SIGHUP", "SIGHUP"]
        assert len(records(rec, "start")) == 1
        assert helper.proc.poll() is None


def test_reload_command_pattern_a_cmd_that_exits_0_runs_once_per_rotation(
        tmp_path, agent, certs):
    # The Go tool's pattern: cmd is a one-shot reload command (mysql -e "ALTER INSTANCE
    # RELOAD TLS"); it exits 0, the helper stays up and runs it again on each rotation.
    rec = tmp_path / "reload.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs, "--exit", "0") +
                      "reload_debounce = 0\n")
    with Run(tmp_path, conf) as helper:
        wait_records(rec, "start", 1)
        helper.wait_log("starts again at the next renewal", 1)
        for n in (2, 3):
            agent.rotate()
            starts = wait_records(rec, "start", n)
            helper.wait_log("starts again at the next renewal", n)
            assert starts[-1]["cert_sha256"] == sha256(certs / "svid.pem")
        assert len(records(rec, "start")) == 3
        assert helper.proc.poll() is None


def test_a_rotation_while_the_reload_command_runs_makes_it_run_once_more(
        tmp_path, agent, certs):
    # The reload command (no renew_signal) is still running when the files change: it may
    # have read the old files, so it runs again when it exits (Go would wait for the next
    # rotation).
    rec = tmp_path / "reload.jsonl"
    conf = write_conf(tmp_path, agent, certs,
                      recorder_cmd(rec, certs, "--exit-on", "USR1=0") + "reload_debounce = 0\n")
    with Run(tmp_path, conf) as helper:
        wait_records(rec, "ready")
        first = records(rec, "start")[0]
        agent.rotate()
        helper.wait_log("renew_signal is not set: nothing sent")
        os.kill(first["pid"], signal.SIGUSR1)  # now it finishes, on the old files
        second = wait_records(rec, "start", 2)[-1]
        assert second["cert_sha256"] == sha256(certs / "svid.pem") != first["cert_sha256"]
        helper.wait_log("the files changed while it ran: starting it again")


# --- renew_action = "restart" --------------------------------------------------------------------


def test_renew_action_restart_restarts_the_child_on_the_new_files(tmp_path, agent, certs):
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs) +
                      'renew_action = "restart"\nreload_debounce = 0\nstop_signal = "SIGINT"\n')
    with Run(tmp_path, conf) as helper:
        first = wait_records(rec, "ready")[0]["pid"]
        seen = {records(rec, "start")[0]["cert_sha256"]}
        for n in (2, 3):
            serial = serial_of(agent.rotate())
            start = wait_records(rec, "start", n)[-1]
            assert start["cert_sha256"] == sha256(certs / "svid.pem")
            assert leaf_serial(certs / "svid.pem") == serial
            assert start["cert_sha256"] not in seen
            seen.add(start["cert_sha256"])
            wait_records(rec, "ready", n)
        assert signals_of(rec, first) == ["SIGINT"]  # stopped with stop_signal
        assert not psutil.pid_exists(first)
        assert helper.proc.poll() is None
        helper.proc.send_signal(signal.SIGTERM)
        assert helper.wait() == 0
    assert "exits with" not in helper.log()  # rotations are not crashes


# --- reload_cmd and pid_file_name ----------------------------------------------------------------


def test_reload_cmd_runs_once_per_rotation_and_a_failing_one_does_not_stop_the_helper(
        tmp_path, agent, certs):
    runs = tmp_path / "runs.txt"
    script = f'echo run >> {runs}; echo "cannot connect to the database" >&2; exit 4'
    conf = write_conf(tmp_path, agent, certs,
                      f"reload_cmd = [\"/bin/sh\", \"-c\", {hcl(script)}]\n"
                      "reload_debounce = 0\n")
    with Run(tmp_path, conf) as helper:
        # after the first write (files changed), then after each rotation
        helper.wait_log("reload_cmd /bin/sh failed", 1)
        for n in (2, 3):
            agent.rotate()
            helper.wait_log("reload_cmd /bin/sh failed", n)
        assert runs.read_text() == "run\n" * 3
        assert "failed: exited 4; stderr: cannot connect to the database" in helper.log()
        assert helper.proc.poll() is None


def test_reload_cmd_succeeds_with_the_command_line_split_like_cmd_args(tmp_path, agent, certs):
    rec = tmp_path / "reload.jsonl"
    line = f"{sys.executable} {RECORDER} --record {rec} --cert {certs / 'svid.pem'} --exit 0"
    conf = write_conf(tmp_path, agent, certs, f"reload_cmd = {hcl(line)}\n"
                      "reload_debounce = 0\ncmd_env { DB_HOST = \"db.internal\" }\n")
    with Run(tmp_path, conf) as helper:
        wait_records(rec, "start", 1)
        helper.wait_log("reload_cmd", 1)
        agent.rotate()
        starts = wait_records(rec, "start", 2)
        assert starts[-1]["cert_sha256"] == sha256(certs / "svid.pem")
        helper.wait_log("succeeded", 2)
        assert "failed" not in helper.log()


def test_a_hanging_reload_cmd_is_killed_after_reload_timeout(tmp_path, agent, certs):
    rec = tmp_path / "reload.jsonl"
    line = f"{sys.executable} {RECORDER} --record {rec} --ignore TERM"
    conf = write_conf(tmp_path, agent, certs, f"reload_cmd = {hcl(line)}\n"
                      "reload_debounce = 0\nreload_timeout = 0.5\n")
    with Run(tmp_path, conf) as helper:
        pid = wait_records(rec, "ready")[0]["pid"]
        helper.wait_log("timed out after 0.5 s and was killed")
        wait_for(lambda: not psutil.pid_exists(pid), what="reload_cmd gone")
        assert helper.proc.poll() is None


def test_pid_file_is_read_each_time_and_retried_while_missing_or_stale_with_cmd_too(
        tmp_path, agent, certs):
    external = tmp_path / "external.jsonl"
    child = tmp_path / "child.jsonl"
    pid_file = tmp_path / "daemon.pid"
    dead = _dead_pid()
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(child, certs) +
                      f'pid_file_name = {hcl(str(pid_file))}\nrenew_signal = "SIGUSR1"\n'
                      "reload_debounce = 0\n")
    daemon = subprocess.Popen([sys.executable, str(RECORDER), "--record", str(external)])
    try:
        wait_records(external, "ready")
        with Run(tmp_path, conf) as helper:
            # first write: the pid file is missing, then stale, then right
            helper.wait_log("does not exist; retrying")
            pid_file.write_text(f"{dead}\n")
            helper.wait_log("(stale pid file); retrying")
            pid_file.write_text(f"{daemon.pid}\n")
            wait_for(lambda: signals_of(external) == ["SIGUSR1"], what="first SIGUSR1")
            wait_records(child, "ready")
            # a rotation signals both cmd and the pid-file process
            agent.rotate()
            wait_for(lambda: signals_of(external) == ["SIGUSR1"] * 2, what="second SIGUSR1")
            wait_for(lambda: signals_of(child) == ["SIGUSR1"], what="cmd's SIGUSR1")
            assert helper.proc.poll() is None
    finally:
        daemon.kill()
        daemon.wait(5)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait(5)
    return proc.pid


# --- reloads never pile up -----------------------------------------------------------------------


def test_a_storm_of_100_pushes_gives_a_handful_of_signals_and_the_last_files(
        tmp_path, agent, certs):
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent, certs, recorder_cmd(rec, certs) +
                      'renew_signal = "SIGHUP"\n')  # reload_debounce: the default 0.5 s
    with Run(tmp_path, conf):
        wait_records(rec, "ready")
        began = time.monotonic()
        for _ in range(100):  # each one reaches disk: 100 writes that change files
            serial = serial_of(agent.rotate())
            wait_for(lambda s=serial: leaf_serial(certs / "svid.pem") == s, what="a push on disk")
        storm = time.monotonic() - began
        written = (certs / "svid.pem").stat().st_mtime
        wait_for(lambda: any(r["time"] >= written for r in records(rec, "signal")),
                 what="a signal after the last write")
        # one reload per reload_debounce window at most, plus the one pending at the end
        assert 1 <= len(signals_of(rec)) <= storm / 0.5 + 2, (storm, signals_of(rec))
        if storm <= 2:  # as on an idle machine: a handful
            assert len(signals_of(rec)) <= 6, signals_of(rec)
        assert leaf_serial(certs / "svid.pem") == serial
