"""Say what to do (issue 16, item 5), through the real CLI.

No agent at the address names the socket, says whether the path exists and points at
SPIFFE_ENDPOINT_SOCKET / agent_address; a TOML `0600` says how to write it; a one-shot run
that finds the files current says so once. (No -config and no helper.conf:
tests/test_cli_flags.py.)
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from util import env_without, run_helper

from helper.workload import advice as hints
from helper.workload.address import parse_address

X509 = ('svid_file_name = "svid.pem"\nsvid_key_file_name = "svid_key.pem"\n'
        'svid_bundle_file_name = "svid_bundle.pem"\n')


def one_shot_conf(tmp_path: Path, certs: Path, address: str | None) -> Path:
    path = tmp_path / "helper.conf"
    line = f'agent_address = "{address}"\n' if address else ""
    path.write_text(f'{line}cert_dir = "{certs}"\n{X509}daemon_mode = false\n'
                    "startup_timeout = 2\n")
    return path


def test_no_agent_and_no_socket_names_it_and_says_what_to_set(tmp_path, certs):
    sock = tmp_path / "spire" / "agent.sock"
    result = run_helper("-config", str(one_shot_conf(tmp_path, certs, str(sock))))
    assert result.returncode == 1
    err = result.stderr
    assert f"the socket {sock} does not exist" in err
    assert "SPIFFE_ENDPOINT_SOCKET" in err
    assert "agent_address" in err
    # the hint is logged once, and the final line carries it too
    assert err.count("does not exist; start the SPIRE agent") == 2
    final = err.strip().splitlines()[-1]
    assert "gave up after 2 s (startup_timeout)" in final
    assert f"the socket {sock} does not exist" in final


def test_no_agent_from_the_environment_variable(tmp_path, certs):
    sock = tmp_path / "env.sock"
    env = env_without("SPIFFE_ENDPOINT_SOCKET", SPIFFE_ENDPOINT_SOCKET=f"unix://{sock}")
    result = run_helper("-config", str(one_shot_conf(tmp_path, certs, None)), env=env)
    assert result.returncode == 1
    assert f"no Workload API at unix://{sock}: the socket {sock} does not exist" in \
        result.stderr


def test_a_stale_socket_is_told_apart_from_a_missing_one(tmp_path, certs):
    sock = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))  # bound, never listening: connections are refused
    try:
        result = run_helper("-config", str(one_shot_conf(tmp_path, certs, str(sock))))
    finally:
        s.close()
    assert result.returncode == 1
    assert f"{sock} exists but nothing accepts connections on it" in result.stderr
    assert "does not exist" not in result.stderr


def test_toml_octal_mode_says_how_to_write_it(tmp_path, certs):
    path = tmp_path / "helper.toml"
    path.write_text(f'agent_address = "/tmp/x.sock"\ncert_dir = "{certs}"\n{X509}'
                    "key_file_mode = 0600\n")
    result = run_helper("check-config", "-config", str(path))
    assert result.returncode == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert 'write key_file_mode = "0600" or key_file_mode = 0o600' in line


def test_toml_setuid_warning_shows_toml_syntax(tmp_path, certs):
    path = tmp_path / "helper.toml"
    path.write_text(f'agent_address = "/tmp/x.sock"\ncert_dir = "{certs}"\n{X509}'
                    "cert_file_mode = 600\n")
    result = run_helper("check-config", "-config", str(path))
    assert result.returncode == 0, result.stderr
    assert 'as an octal string such as "0644", or as 0o644' in result.stderr


def test_one_shot_with_current_files_says_so_once(tmp_path, agent, certs):
    path = one_shot_conf(tmp_path, certs, agent.socket_path)
    first = run_helper("-config", str(path))
    assert first.returncode == 0, first.stderr
    assert "one-shot: files written; exiting" in first.stderr
    again = run_helper("-config", str(path))
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already current") == 1
    assert "unchanged on disk" not in again.stderr
    assert "files written" not in again.stderr
    assert agent.spiffe_id in again.stderr


@pytest.mark.parametrize(("address", "exists", "expected"), [
    ("/run/spire/agent.sock", False, "the socket /run/spire/agent.sock does not exist"),
    ("unix:///run/spire/agent.sock", True, "exists but nothing accepts connections"),
    ("tcp://127.0.0.1:8081", None, "no Workload API answers at tcp://127.0.0.1:8081"),
])
def test_no_agent_hint_is_one_line_naming_both_settings(address, exists, expected):
    text = hints.no_agent(parse_address(address), exists)
    assert expected in text
    assert "\n" not in text
    assert "SPIFFE_ENDPOINT_SOCKET" in text
    assert "agent_address" in text


def test_permission_denied_hint():
    text = hints.no_agent(parse_address("/run/a.sock"), True, permission_denied=True)
    assert "may not connect" in text


def test_toml_octal_hint_only_for_octal_lines():
    error = "Expected newline or end of document after a statement (at line 2, column 17)"
    assert hints.toml_octal('a = 1\nkey_file_mode = 0640\n', error) is not None
    assert hints.toml_octal('a = 1\nkey_file_mode = x\n', error) is None
    assert hints.toml_octal('a = 1\n', error) is None
