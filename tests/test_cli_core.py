"""The core issue end to end: the real CLI against the real dev-agent on a real socket."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pki import is_leaf_key, with_foreign_key
from util import HelperProcess, env_without, leaf_serial, mode, read_certs, run_helper, wait_for

from helper.devagent import DevAgentThread
from helper.outputs.writer import TEMP_MARKER

GO_CONF = """\
# A helper.conf as Go spiffe-helper users have it: HCL 1, octal modes, // comments.
agent_address = "{socket}"
cert_dir = "{cert_dir}"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
cert_file_mode = 0640 // octal, as in Go
key_file_mode = 0600
"""

TOML_CONF = """\
agent_address = "unix://{socket}"
cert_dir = "{cert_dir}"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
cert_file_mode = 0o640
key_file_mode = 0o600
"""

FILES = ("svid.pem", "svid_key.pem", "svid_bundle.pem")


def conf(tmp_path: Path, template: str, agent: DevAgentThread, cert_dir: Path,
         name: str = "helper.conf", extra: str = "") -> Path:
    path = tmp_path / name
    path.write_text(template.format(socket=agent.socket_path, cert_dir=cert_dir) + extra)
    return path


def assert_valid_set(cert_dir: Path, agent: DevAgentThread) -> x509.Certificate:
    """The three files form a consistent SVID: key matches leaf, leaf chains to bundle."""
    chain = read_certs(cert_dir / "svid.pem")
    bundle = read_certs(cert_dir / "svid_bundle.pem")
    key = serialization.load_pem_private_key((cert_dir / "svid_key.pem").read_bytes(), None)
    leaf = chain[0]
    assert is_leaf_key(key, leaf)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [agent.spiffe_id]
    issuer = chain[-1]
    assert any(root.subject == issuer.issuer for root in bundle)
    for root in bundle:
        if root.subject == issuer.issuer:
            issuer.verify_directly_issued_by(root)
    return leaf


def consistent_serial(cert_dir: Path, agent: DevAgentThread) -> int | None:
    try:
        return assert_valid_set(cert_dir, agent).serial_number
    except (AssertionError, ValueError):
        return None


@pytest.mark.parametrize(("template", "name"), [(GO_CONF, "helper.conf"),
                                                (TOML_CONF, "helper.toml")])
def test_one_shot_writes_a_valid_set_with_exact_modes(tmp_path, agent, certs, template, name):
    path = conf(tmp_path, template, agent, certs, name)
    old = os.umask(0)
    try:
        result = run_helper("-config", str(path), "-daemon-mode=false")
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    assert_valid_set(certs, agent)
    assert mode(certs / "svid.pem") == 0o640
    assert mode(certs / "svid_bundle.pem") == 0o640
    assert mode(certs / "svid_key.pem") == 0o600
    assert sorted(p.name for p in certs.iterdir()) == sorted(FILES)


def test_daemon_mode_from_the_file_is_overridden_by_the_flag(tmp_path, agent, certs):
    path = conf(tmp_path, GO_CONF, agent, certs, extra="daemon_mode = true\n")
    result = run_helper("-config", str(path), "-daemon-mode=false", timeout=20)
    assert result.returncode == 0, result.stderr


def test_python_dash_m_and_console_script_agree(tmp_path):
    for cmd in (["spiffe-helper", "-version"], ["python", "-m", "helper", "--version"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True).stdout
        assert out.startswith("spiffe-helper ")


def test_rotation_reaches_disk_with_new_inode_and_readers_never_see_partial_files(
        tmp_path, agent, certs):
    path = conf(tmp_path, GO_CONF, agent, certs)
    stop = threading.Event()
    bad_reads: list[str] = []
    reads = 0

    def reader():
        nonlocal reads
        while not stop.is_set():
            for name in FILES:
                try:
                    data = (certs / name).read_bytes()
                except FileNotFoundError:
                    continue
                reads += 1
                try:
                    if name == "svid_key.pem":
                        serialization.load_pem_private_key(data, None)
                    else:
                        assert x509.load_pem_x509_certificates(data)
                except Exception as exc:  # any partial file fails to parse
                    bad_reads.append(f"{name}: {exc}")

    with HelperProcess("-config", str(path), log=tmp_path / "helper.log") as helper:
        first = wait_for(lambda: leaf_serial(certs / "svid.pem"), what="first write")
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            for _ in range(10):
                inode = (certs / "svid.pem").stat().st_ino
                minted = agent.rotate()
                serial = x509.load_der_x509_certificate(minted.svids[0].x509_svid).serial_number
                wait_for(lambda s=serial: leaf_serial(certs / "svid.pem") == s, what="rotation")
                # between the renames of cert and key a reader may see a new cert with the old
                # key for a moment; the set becomes consistent right after
                wait_for(lambda s=serial: consistent_serial(certs, agent) == s,
                         what="consistent set")
                assert (certs / "svid.pem").stat().st_ino != inode
        finally:
            stop.set()
            t.join(5)
        assert leaf_serial(certs / "svid.pem") != first
        assert reads > 0
        assert bad_reads == []
        assert helper.stop() == 0
    assert not [p for p in certs.iterdir() if TEMP_MARKER in p.name]


def test_mismatched_key_is_refused_old_files_stay_and_the_stream_survives(
        tmp_path, agent, certs):
    path = conf(tmp_path, GO_CONF, agent, certs)
    with HelperProcess("-config", str(path), log=tmp_path / "helper.log") as helper:
        wait_for(lambda: leaf_serial(certs / "svid.pem"), what="first write")
        wait_for(lambda: consistent_serial(certs, agent), what="consistent set")
        before = {n: (certs / n).read_bytes() for n in FILES}
        inodes = {n: (certs / n).stat().st_ino for n in FILES}
        # the SVID on disk, but with a key that belongs to someone else
        agent.wait_streams(1)
        agent.push(with_foreign_key(agent.current))
        wait_for(lambda: "key_matches_leaf" in helper.output(), what="refusal logged")
        assert {n: (certs / n).read_bytes() for n in FILES} == before
        assert {n: (certs / n).stat().st_ino for n in FILES} == inodes
        # the same stream still delivers the next good message
        calls = agent.calls
        good = agent.rotate()
        serial = x509.load_der_x509_certificate(good.svids[0].x509_svid).serial_number
        wait_for(lambda: leaf_serial(certs / "svid.pem") == serial, what="next rotation")
        assert agent.calls == calls
        assert helper.proc.poll() is None


def test_permission_denied_at_start_is_retried(tmp_path, agent, certs):
    agent.fail_next(2, grpc.StatusCode.PERMISSION_DENIED, "no identity issued yet")
    path = conf(tmp_path, GO_CONF, agent, certs)
    result = run_helper("-config", str(path), "-daemon-mode=false", timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("PERMISSION_DENIED") == 2
    assert agent.calls == 3
    assert_valid_set(certs, agent)


def test_invalid_argument_is_final_and_not_spun_on(tmp_path, agent, certs):
    agent.fail_next(100, grpc.StatusCode.INVALID_ARGUMENT, "malformed request")
    path = conf(tmp_path, GO_CONF, agent, certs)
    start = time.monotonic()
    result = run_helper("-config", str(path), timeout=20)  # daemon mode
    assert result.returncode == 1
    assert time.monotonic() - start < 10
    assert "INVALID_ARGUMENT" in result.stderr
    assert agent.calls == 1
    assert list(certs.iterdir()) == []


def test_one_shot_gives_up_after_startup_timeout_with_the_last_error(tmp_path, certs):
    path = tmp_path / "helper.conf"
    path.write_text(GO_CONF.format(socket=tmp_path / "nobody-home.sock", cert_dir=certs)
                    + "startup_timeout = 2\n")
    result = run_helper("-config", str(path), "-daemon-mode=false", timeout=20)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "startup_timeout" in last
    assert "UNAVAILABLE" in last
    assert list(certs.iterdir()) == []


def test_stale_temp_files_of_a_killed_run_are_removed_at_start(tmp_path, agent, certs):
    stale = certs / f".svid_key.pem{TEMP_MARKER}0123456789abcdef"
    stale.write_bytes(b"half a key")
    path = conf(tmp_path, GO_CONF, agent, certs)
    result = run_helper("-config", str(path), "-daemon-mode=false")
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    assert sorted(p.name for p in certs.iterdir()) == sorted(FILES)


def test_sigterm_in_daemon_mode_exits_zero(tmp_path, agent, certs):
    path = conf(tmp_path, GO_CONF, agent, certs)
    with HelperProcess("-config", str(path)) as helper:
        wait_for(lambda: leaf_serial(certs / "svid.pem"), what="first write")
        assert helper.stop() == 0


def test_address_from_spiffe_endpoint_socket(tmp_path, agent, certs):
    path = tmp_path / "helper.conf"
    path.write_text(GO_CONF.replace('agent_address = "{socket}"\n', "").format(
        socket="", cert_dir=certs))
    env = env_without("SPIFFE_ENDPOINT_SOCKET", SPIFFE_ENDPOINT_SOCKET=agent.address)
    result = run_helper("-config", str(path), "-daemon-mode=false", env=env)
    assert result.returncode == 0, result.stderr
    assert_valid_set(certs, agent)


BAD_CONFIGS = {
    "relative path": ('agent_address = "run/agent.sock"', "agent_address"),
    "unix authority": ('agent_address = "unix://host/x"', "agent_address"),
    "tcp host name": ('agent_address = "tcp://name:1"', "agent_address"),
    "tcp missing port": ('agent_address = "tcp://127.0.0.1"', "agent_address"),
    "unknown key": ('agent_adress = "/tmp/x.sock"', "agent_adress"),
    "half the x509 trio": (None, "svid_bundle_file_name"),
    "missing cert_dir": ('cert_dir = "{tmp}/does-not-exist"', "cert_dir"),
    "octal 08": ("cert_file_mode = 08", "cert_file_mode"),
    "wrong type": ('daemon_mode = "yes"', "daemon_mode"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_exits_2_fast_with_one_clear_line_and_writes_nothing(tmp_path, case):
    line, key = BAD_CONFIGS[case]
    certs = tmp_path / "certs"
    certs.mkdir()
    text = (f'agent_address = "{tmp_path}/agent.sock"\ncert_dir = "{certs}"\n'
            'svid_file_name = "svid.pem"\nsvid_key_file_name = "key.pem"\n')
    if line is None:
        pass  # the bundle file name is missing: half the trio
    else:
        text += 'svid_bundle_file_name = "bundle.pem"\n'
        if line.startswith(("agent_address", "cert_dir")):
            text = "\n".join(x for x in text.splitlines() if not x.startswith(line.split()[0]))
        text += "\n" + line.format(tmp=tmp_path) + "\n"
    path = tmp_path / "helper.conf"
    path.write_text(text)
    start = time.monotonic()
    result = run_helper("-config", str(path))
    elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stderr
    assert elapsed < 1.0 or os.environ.get("CI_SLOW"), elapsed
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0]
    assert key in lines[0]
    assert "Traceback" not in result.stderr
    assert list(certs.iterdir()) == []


def test_missing_config_file_exits_2(tmp_path):
    result = run_helper("-config", str(tmp_path / "nope.conf"))
    assert result.returncode == 2
    assert "nope.conf" in result.stderr


def test_check_config_prints_the_resolved_config(tmp_path, agent, certs):
    path = conf(tmp_path, GO_CONF, agent, certs)
    result = run_helper("check-config", "-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "cert_file_mode = 0640" in result.stdout
    assert "key_file_mode = 0600" in result.stdout
    assert "daemon_mode = true" in result.stdout
    again = tmp_path / "resolved.conf"
    again.write_text(result.stdout)
    def body(text: str) -> list[str]:  # all but the comment naming the source file
        return [x for x in text.splitlines() if not x.startswith("#")]

    assert body(run_helper("check-config", "-config", str(again)).stdout) == body(result.stdout)


def test_help_exits_zero():
    result = run_helper("-help")
    assert result.returncode == 0
    assert "-config" in result.stdout or "--config" in result.stdout


def test_demo_shows_two_rotations(tmp_path):
    result = run_helper("demo", "--dir", str(tmp_path / "demo"), timeout=60)
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    assert "spiffe://example.org/demo/workload" in out
    assert "rotation 1:" in out
    assert "rotation 2:" in out
    assert "mode 0600" in out
    assert "JWT-SVID:   spiffe://example.org/demo/workload" in out
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == sorted(
        [*FILES, "jwt_svid.token", "jwt_bundle.json"])


def test_check_config_warns_on_stderr_about_a_world_readable_key_mode(tmp_path, agent, certs):
    path = conf(tmp_path, GO_CONF.replace("key_file_mode = 0600", "key_file_mode = 444"),
                agent, certs)
    result = run_helper("check-config", "-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "key_file_mode is 0674" in result.stderr
    assert "key_file_mode = 0674" in result.stdout
