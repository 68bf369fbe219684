"""Files the helper reads that someone else controls (issue 12, item 2): FIFOs and other
non-files where a file is read at run time.

Real FIFOs, real signals, and the real CLI against the real dev-agent.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from supervised import Run, hcl, write_conf
from util import free_port, leaf_serial, wait_for

from helper.config import ConfigError, loads, read_password_file
from helper.supervise.external import read_pid_file


def health_conf(port: int) -> str:
    return ("health_checks {\n  listener_enabled = true\n  bind_address = \"127.0.0.1\"\n"
            f"  bind_port = {port}\n}}\n")


def live(port: int, timeout: float = 2.0) -> int:
    """The status /live answers with (it must answer, within `timeout`)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/live", timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def assert_stops_promptly(helper: Run, within: float = 10.0) -> None:
    began = time.monotonic()
    helper.proc.send_signal(signal.SIGTERM)
    helper.proc.wait(within + 5)
    assert time.monotonic() - began < within, helper.log()


# --- item 2: FIFOs and other non-files where a file is read at run time ----------------------


def test_a_fifo_at_the_pid_file_freezes_neither_rotations_nor_live_nor_sigterm(
        tmp_path, agent, certs):
    fifo = tmp_path / "daemon.pid"
    os.mkfifo(fifo)
    port = free_port()
    conf = write_conf(tmp_path, agent, certs, f"pid_file_name = {hcl(str(fifo))}\n"
                      'renew_signal = "SIGUSR1"\nreload_debounce = 0\n' + health_conf(port))
    with Run(tmp_path, conf) as helper:
        helper.wait_log("not a regular file")
        serial = leaf_serial(certs / "svid.pem")
        assert live(port) == 200
        rotated = agent.rotate()
        assert rotated is not None
        wait_for(lambda: leaf_serial(certs / "svid.pem") not in (None, serial),
                 what="a rotation with a FIFO at the pid file")
        assert live(port) == 200
        assert_stops_promptly(helper)
    assert "Traceback" not in helper.log()


def test_a_fifo_at_the_config_file_refuses_the_reload_and_freezes_nothing(
        tmp_path, agent, certs):
    """SIGHUP re-reads the config: a FIFO (or device) put at its path is a refused reload,
    never a thread stuck waiting for a writer (which would also hang shutdown)."""
    port = free_port()
    conf = write_conf(tmp_path, agent, certs, health_conf(port))
    with Run(tmp_path, conf) as helper:
        wait_for(lambda: leaf_serial(certs / "svid.pem"), what="the first write")
        conf.unlink()
        os.mkfifo(conf)
        helper.proc.send_signal(signal.SIGHUP)
        helper.wait_log("not a regular file")
        assert live(port) == 200
        serial = leaf_serial(certs / "svid.pem")
        agent.rotate()
        wait_for(lambda: leaf_serial(certs / "svid.pem") not in (None, serial),
                 what="a rotation after the refused reload")
        assert_stops_promptly(helper)
    lines = [line for line in helper.log().splitlines() if "not a regular file" in line]
    assert len(lines) == 1, lines
    assert "refused" in lines[0]
    assert "Traceback" not in helper.log()


def test_a_fifo_at_the_password_file_is_a_one_line_error_and_the_helper_carries_on(
        tmp_path, agent, certs):
    password = tmp_path / "p12.pass"
    password.write_text("correct horse\n")
    port = free_port()
    conf = write_conf(tmp_path, agent, certs, 'pkcs12_file_name = "k.p12"\n'
                      f"pkcs12_password_file = {hcl(str(password))}\nreload_debounce = 0\n"
                      + health_conf(port))
    with Run(tmp_path, conf) as helper:
        wait_for(lambda: (certs / "k.p12").exists(), what="the first keystore")
        first = (certs / "k.p12").read_bytes()
        password.unlink()
        os.mkfifo(password)
        agent.rotate()
        helper.wait_log("not a regular file")
        assert live(port) == 503  # the write failed; /live says so at once
        # back to a regular file: the next rotation writes everything again
        password.unlink()
        password.write_text("correct horse\n")
        serial = leaf_serial(certs / "svid.pem")
        agent.rotate()
        wait_for(lambda: leaf_serial(certs / "svid.pem") != serial, what="the next rotation")
        wait_for(lambda: (certs / "k.p12").read_bytes() != first, what="a new keystore")
        # the files are renamed into place by the worker thread a moment before the event
        # loop marks the write done
        wait_for(lambda: live(port) == 200, what="/live 200 after the good write")
        assert_stops_promptly(helper)
    lines = [line for line in helper.log().splitlines() if "not a regular file" in line]
    assert lines
    assert "Traceback" not in helper.log()


@pytest.mark.parametrize("kind", ["fifo", "directory", "device", "huge"])
def test_the_password_file_must_be_a_small_regular_file(tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    Path("pw").write_text("pw\n")
    cfg = loads('pkcs12_file_name = "k.p12"\npkcs12_password_file = "pw"\n', environ={})
    os.unlink("pw")
    if kind == "fifo":
        os.mkfifo("pw")
    elif kind == "directory":
        os.mkdir("pw")
    elif kind == "device":
        os.symlink("/dev/zero", "pw")
    else:
        Path("pw").write_bytes(b"x" * (1 << 20))
    began = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        read_password_file(cfg)
    assert time.monotonic() - began < 1.0
    message = str(caught.value)
    assert "\n" not in message
    assert "xxxx" not in message
    assert ("longer than" if kind == "huge" else "not a regular file") in message


def test_a_fifo_at_the_pid_file_is_not_waited_for(tmp_path):
    fifo = tmp_path / "daemon.pid"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        read_pid_file(str(fifo))
