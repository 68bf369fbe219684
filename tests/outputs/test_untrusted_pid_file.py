"""Files the helper reads that someone else controls (issue 12, item 3): the pid file is not
trusted blindly.

Real symlinks, real processes owned by other users, real signals, and the real CLI against
the real dev-agent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from supervised import Run, hcl, write_conf
from util import wait_for

from helper.supervise import external
from helper.supervise.external import read_pid_file, signal_pid_file

IS_ROOT = os.geteuid() == 0


# --- item 3: the pid file is not trusted blindly ----------------------------------------------


def run_signal(path: Path, sig: signal.Signals = signal.SIGUSR1, tries: int = 2) -> bool:
    return asyncio.run(signal_pid_file(str(path), sig, tries=tries, first_delay=0.01))


class Target:
    """A process that prints one line per SIGUSR1/SIGUSR2 it gets (optionally as `user`)."""

    CODE = ("import signal, sys\n"
            "def on(num, frame):\n"
            "    print(signal.Signals(num).name, flush=True)\n"
            "signal.signal(signal.SIGUSR1, on)\nsignal.signal(signal.SIGUSR2, on)\n"
            "print('ready', flush=True)\n"
            "while True:\n    signal.pause()\n")

    def __init__(self, user: str | None = None) -> None:
        # another user may not be able to run the test's interpreter (under /root)
        python = "/usr/bin/python3" if user and os.path.exists("/usr/bin/python3") else \
            sys.executable
        self.proc = subprocess.Popen([python, "-c", self.CODE], stdout=subprocess.PIPE,
                                     text=True, user=user, cwd="/")
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "ready\n"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def first_signal_after(self) -> str:
        """The first signal this process got: SIGUSR2 is sent now as a marker, so 'SIGUSR2'
        means the SIGUSR1 under test never arrived (a pending SIGUSR1 is handled first)."""
        os.kill(self.pid, signal.SIGUSR2)
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def target():
    t = Target()
    yield t
    t.close()


@pytest.fixture
def nobody():
    if not IS_ROOT:
        pytest.skip("the helper's root rules need the tests to run as root")
    entry = pwd.getpwnam("nobody")
    return entry


def test_c_a_pid_out_of_range_is_a_one_line_warning_not_an_overflow(tmp_path, caplog):
    pid_file = tmp_path / "big.pid"
    for text in ("2147483648", "99999999999999999999999", "4194305"):
        pid_file.write_text(text + "\n")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="spiffe_helper"):
            assert run_signal(pid_file) is False
        assert caplog.records, text
        assert all("\n" not in r.getMessage() and r.exc_info is None for r in caplog.records)
        assert "out of range" in caplog.text


def test_c_the_reload_cmd_still_runs_after_a_bad_pid_file(tmp_path, agent, certs):
    pid_file = tmp_path / "daemon.pid"
    pid_file.write_text("2147483648\n")
    marker = tmp_path / "reload-ran"
    conf = write_conf(tmp_path, agent, certs, f"pid_file_name = {hcl(str(pid_file))}\n"
                      'renew_signal = "SIGUSR1"\nreload_debounce = 0\n'
                      f"reload_cmd = {hcl(f'touch {marker}')}\n")
    with Run(tmp_path, conf) as helper:
        wait_for(marker.exists, timeout=20, what="reload_cmd after the bad pid file")
        assert helper.proc.poll() is None
    assert "OverflowError" not in helper.log()
    assert "Traceback" not in helper.log()


@pytest.mark.parametrize("which", ["zero", "one", "negative", "self", "own group"])
def test_pids_that_are_not_one_other_process_are_refused(tmp_path, which):
    pid = {"zero": 0, "one": 1, "negative": -5, "self": os.getpid(),
           "own group": os.getpgrp()}[which]
    path = tmp_path / "x.pid"
    path.write_text(f"{pid}\n")
    with pytest.raises(ValueError, match=r"init|no single process|own pid|own process group|"
                       r"not a process|no pid"):
        read_pid_file(str(path))


def test_b_the_contents_of_the_pid_file_never_reach_the_log(tmp_path, caplog):
    secret = tmp_path / "secret"
    secret.write_text("TOPSECRET-token-1234\nmore\n")
    secret.chmod(0o600)
    link = tmp_path / "daemon.pid"
    link.symlink_to(secret)
    with caplog.at_level(logging.DEBUG):
        assert run_signal(link) is False
    assert "TOPSECRET" not in caplog.text
    assert "TOPS" not in caplog.text
    assert caplog.records


def test_a_the_pid_file_of_another_user_cannot_name_a_root_process(tmp_path, nobody, target,
                                                                   caplog):
    pid_file = tmp_path / "daemon.pid"
    pid_file.write_text(f"{target.pid}\n")
    os.chown(pid_file, nobody.pw_uid, nobody.pw_gid)
    with caplog.at_level(logging.WARNING):
        assert run_signal(pid_file, tries=1) is False
    assert target.first_signal_after() == "SIGUSR2"
    assert "not owned by" in caplog.text


def test_a_a_symlink_of_another_user_cannot_name_a_root_process(tmp_path, nobody, target):
    real = tmp_path / "real.pid"
    real.write_text(f"{target.pid}\n")
    link = tmp_path / "daemon.pid"
    link.symlink_to(real)
    os.lchown(link, nobody.pw_uid, nobody.pw_gid)
    assert run_signal(link, tries=1) is False
    assert target.first_signal_after() == "SIGUSR2"


def test_a_a_directory_of_another_user_cannot_hold_a_pid_file_naming_root(tmp_path, nobody,
                                                                          target):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    pid_file = run_dir / "daemon.pid"
    pid_file.write_text(f"{target.pid}\n")
    os.chown(run_dir, nobody.pw_uid, nobody.pw_gid)
    assert run_signal(pid_file, tries=1) is False
    assert target.first_signal_after() == "SIGUSR2"


def test_a_the_pid_file_of_another_user_may_name_that_users_process(tmp_path, nobody):
    target = Target(user="nobody")
    try:
        pid_file = tmp_path / "daemon.pid"
        pid_file.write_text(f"{target.pid}\n")
        os.chown(pid_file, nobody.pw_uid, nobody.pw_gid)
        assert run_signal(pid_file, tries=1) is True
        assert target.first_signal_after() == "SIGUSR1"
    finally:
        target.close()


def test_a_root_owned_pid_file_may_name_any_process(tmp_path, target):
    pid_file = tmp_path / "daemon.pid"
    pid_file.write_text(f"{target.pid}\n")
    assert run_signal(pid_file, tries=1) is True
    assert target.first_signal_after() == "SIGUSR1"


def test_a_pidfd_is_used_where_the_platform_has_one():
    if not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd_open here")
    assert external.PIDFD_AVAILABLE
