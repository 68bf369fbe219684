"""Files the helper reads that someone else controls (issue 12, items 2, 3, 5 and 9).

Real FIFOs, real symlinks, real processes owned by other users, real signals, and the
real CLI against the real dev-agent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from supervised import Run, hcl, write_conf
from util import free_port, leaf_serial, run_helper, wait_for

from helper.config import ConfigError, loads, read_password_file
from helper.outputs.formats import BundleSequences, pkcs12_bytes
from helper.outputs.writer import AtomicWriter, is_temp_name, temp_name
from helper.supervise import external
from helper.supervise.external import read_pid_file, signal_pid_file

NAME_MAX = 255
IS_ROOT = os.geteuid() == 0


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


# --- item 5: names that cannot be written -----------------------------------------------------


@pytest.mark.parametrize("name", ["a" * 255, "a" * 230, "é" * 127, "k.pem"])
def test_temp_names_fit_name_max_whenever_the_final_name_does(name):
    temp = temp_name(Path("/d") / name, "0123456789abcdef")
    assert len(os.fsencode(temp.name)) <= NAME_MAX
    assert is_temp_name(temp.name)
    assert temp.parent == Path("/d")


def test_a_230_byte_output_name_is_written(tmp_path, agent, certs):
    name = "c" * 226 + ".pem"
    writer = AtomicWriter()
    from helper.outputs.pem import OutputFile
    assert writer.write_set([OutputFile(certs / name, b"data", 0o644, secret=False)])
    assert (certs / name).read_bytes() == b"data"
    conf = write_conf(tmp_path, agent, certs, f'svid_combined_file_name = "{name}"\n')
    assert run_helper("check-config", "-config", str(conf)).returncode == 0
    with Run(tmp_path, conf) as helper:
        wait_for(lambda: b"PRIVATE KEY" in (certs / name).read_bytes(), what="the combined file")
        assert "File name too long" not in helper.log()


def test_check_config_refuses_output_names_over_name_max(tmp_path, agent, certs):
    conf = write_conf(tmp_path, agent, certs, f'svid_combined_file_name = "{"c" * 256}"\n')
    result = run_helper("check-config", "-config", str(conf))
    assert result.returncode == 2
    assert "svid_combined_file_name" in result.stderr
    assert "255" in result.stderr
    conf = write_conf(tmp_path, agent, certs, f'credential_folder = "{"f" * 256}/x"\n')
    result = run_helper("check-config", "-config", str(conf))
    assert result.returncode == 2
    assert "credential_folder" in result.stderr


def test_federated_trust_domains_with_long_names_in_the_credential_folder(
        tmp_path, agent, certs):
    folder = certs / "spiffe"
    folder.mkdir()
    fits = "a" * 198 + ".org"  # 202 bytes: the file name is 231, the temp would be 267
    too_long = "b" * 240 + ".org"  # a valid trust domain whose file name is over 255
    conf = write_conf(tmp_path, agent, certs, 'credential_folder = "spiffe"\n'
                      "reload_debounce = 0\n")
    with Run(tmp_path, conf) as helper:
        wait_for(lambda: (folder / "credential-bundle.private-key.x509.pem").exists(),
                 what="the credential folder")
        serial = leaf_serial(certs / "svid.pem")
        agent.set_federated([fits, too_long])
        wait_for(lambda: (folder / f"{fits}.spiffe-trust-bundle.x509.pem").exists(),
                 what="the 198-byte trust domain's bundle")
        helper.wait_log("cannot be named")
        agent.rotate()
        wait_for(lambda: leaf_serial(certs / "svid.pem") != serial, what="the next rotation")
        assert "File name too long" not in helper.log()
        assert len([ln for ln in helper.log().splitlines() if "cannot be named" in ln]) == 1


# --- item 9: files read back at start-up are hints ---------------------------------------------


def test_a_deeply_nested_bundle_map_is_ignored_and_rewritten(tmp_path, agent, certs):
    (certs / "bundle_map.json").write_text("[" * 1_000_000 + "]" * 1_000_000)
    conf = write_conf(tmp_path, agent, certs, 'spiffe_bundle_map_file_name = "bundle_map.json"\n')
    with Run(tmp_path, conf) as helper:
        wait_for(lambda: (certs / "bundle_map.json").read_bytes().startswith(b"{"),
                 what="the bundle map rewritten")
        assert helper.proc.poll() is None
    assert "RecursionError" not in helper.log()
    assert "trust_domains" in json.loads((certs / "bundle_map.json").read_text())


def test_bundle_sequences_seed_is_bounded():
    seq = BundleSequences()
    seq.seed(b"[" * 100_000 + b"]" * 100_000)
    seq.seed(b'{"trust_domains": ' + b"[" * 50 + b"]" * 50 + b"}")
    seq.seed(b"\xff" * 10)
    assert seq.known == {}


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_read(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the element at `at`."""
    tag, first = data[at], data[at + 1]
    at += 2
    if first < 0x80:
        return tag, at, at + first
    size = int.from_bytes(data[at:at + (first & 0x7F)], "big")
    at += first & 0x7F
    return tag, at, at + size


def _der_children(data: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        _, _start, end = _der_read(data, at)
        out.append(data[at:end])
        at = end
    return out


def with_mac_iterations(p12: bytes, iterations: int) -> bytes:
    """`p12` with the iteration count of its MacData replaced (the MAC is then wrong too,
    which a reader can only find out after running the iterations)."""
    tag, start, end = _der_read(p12, 0)
    version, auth_safe, mac_data = _der_children(p12[start:end])
    mtag, mstart, mend = _der_read(mac_data, 0)
    digest_info, salt, _old = _der_children(mac_data[mstart:mend])
    value = iterations.to_bytes((iterations.bit_length() + 8) // 8, "big")
    new_mac_body = digest_info + salt + b"\x02" + _der_len(len(value)) + value
    new_mac = bytes([mtag]) + _der_len(len(new_mac_body)) + new_mac_body
    body = version + auth_safe + new_mac
    return bytes([tag]) + _der_len(len(body)) + body


def test_a_keystore_with_2_to_the_31_mac_iterations_does_not_stall_start_up(
        tmp_path, agent, certs):
    from cryptography.hazmat.primitives.serialization import pkcs12

    password = tmp_path / "p12.pass"
    password.write_text("pw\n")
    conf = write_conf(tmp_path, agent, certs, 'pkcs12_file_name = "k.p12"\n'
                      f"pkcs12_password_file = {hcl(str(password))}\n")
    with Run(tmp_path, conf):
        wait_for(lambda: (certs / "k.p12").exists(), what="the first keystore")
    good = (certs / "k.p12").read_bytes()
    assert pkcs12.load_pkcs12(with_mac_iterations(good, 2048), b"pw") is not None
    hostile = with_mac_iterations(good, 2 ** 31 - 1)  # OpenSSL refuses 2^31 itself
    (certs / "k.p12").write_bytes(hostile)
    began = time.monotonic()
    with Run(tmp_path, conf):
        wait_for(lambda: (certs / "k.p12").read_bytes() != hostile, timeout=20,
                 what="the keystore rewritten")
    assert time.monotonic() - began < 20
    loaded = pkcs12.load_pkcs12((certs / "k.p12").read_bytes(), b"pw")
    assert loaded.cert is not None


def test_pkcs12_iteration_counts_are_checked_before_any_key_derivation():
    from helper.outputs.formats import pkcs12_iterations_ok
    data = pkcs12_bytes(_an_svid(), b"pw")
    assert pkcs12_iterations_ok(data)
    assert pkcs12_iterations_ok(pkcs12_bytes(_an_svid(), None))
    assert not pkcs12_iterations_ok(with_mac_iterations(data, 2 ** 31 - 1))
    assert not pkcs12_iterations_ok(with_mac_iterations(data, 2 ** 31))
    assert not pkcs12_iterations_ok(with_mac_iterations(data, 0))
    assert not pkcs12_iterations_ok(b"\x30\x80garbage")
    assert not pkcs12_iterations_ok(b"")


def _an_svid():
    from pki import make_leaf, make_root, pkcs8_der

    from helper.identity.snapshot import X509SVID
    root = make_root("example.org")
    leaf = make_leaf(root, "spiffe://example.org/w")
    return X509SVID("spiffe://example.org/w", "example.org", (leaf.cert,), leaf.key,
                    pkcs8_der(leaf.key))


def test_a_bundle_map_with_an_odd_sequence_is_ignored_whole():
    seq = BundleSequences()
    seq.seed(b'{"trust_domains": {"a.org": {"spiffe_sequence": 5, "keys": []},'
             b' "b.org": {"spiffe_sequence": ' + b"9" * 40 + b', "keys": []}}}')
    assert seq.known == {}
    seq.seed(b'{"trust_domains": {"a.org": {"spiffe_sequence": 5, "keys": []}}}')
    assert seq.known["a.org"][1] == 5


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(body)) + body


def test_iteration_counts_are_found_inside_encapsulated_der():
    from helper.outputs.formats import pkcs12_iterations_ok
    def params(count: int) -> bytes:
        inner = _tlv(0x30, _tlv(0x04, b"saltsalt") + _tlv(0x02, count.to_bytes(4, "big")))
        return _tlv(0x30, _tlv(0x02, b"\x03") + _tlv(0x04, inner))
    assert pkcs12_iterations_ok(params(20000))
    assert not pkcs12_iterations_ok(params(1 << 30))
