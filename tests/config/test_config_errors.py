"""Configuration validation errors, reading the file, the agent address, daemon mode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from config_samples import X509
from util import write_config as write

from helper.config import (
    DEFAULT_AGENT_ADDRESS,
    Config,
    from_mapping,
    load,
    loads,
)
from helper.errors import AddressError, ConfigError
from helper.supervise.cmdargs import ERR_BARE_QUOTE, ERR_QUOTE
from helper.workload.address import Address, parse_address

# --- validation errors ------------------------------------------------------------------------

JWT = 'jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "j"}]\n'

ERRORS = [
    # unknown keys (Go: "unknown top level key(s)")
    pytest.param(X509 + "bogus = 1\n", "bogus", "unknown key", id="unknown-top-level-key"),
    pytest.param(X509 + 'zzz = 1\nhealth_checks {\n nope = 1\n}\n'
                 'jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "j", extra = 1}]\n',
                 "health_checks.nope,jwt_svids[0].extra,zzz", "unknown keys",
                 id="unknown-keys-all-named"),
    pytest.param('svid_file = "s.pem"\n', "svid_file", "did you mean svid_file_name?",
                 id="unknown-key-suggestion"),
    # wrong types
    pytest.param(X509 + 'daemon_mode = "false"\n', "daemon_mode", "write false without quotes",
                 id="bool-as-string"),
    pytest.param(X509 + "omit_expired = 1\n", "omit_expired", "expected true or false",
                 id="bool-as-number"),
    pytest.param("svid_file_name = 1\n", "svid_file_name", "expected a string, got an integer 1",
                 id="string-as-number"),
    pytest.param(X509 + "hint = true\n", "hint", "expected a string", id="string-as-bool"),
    pytest.param(X509 + 'cert_file_mode = "08"\n', "cert_file_mode",
                 "octal file mode", id="hcl-mode-as-bad-string"),
    pytest.param(X509 + "cert_file_mode = 6.44\n", "cert_file_mode", "octal file mode",
                 id="mode-as-float"),
    pytest.param(X509 + "cert_file_mode = true\n", "cert_file_mode", "got a boolean",
                 id="mode-as-bool"),
    pytest.param(X509 + 'startup_timeout = "5"\n', "startup_timeout", "number of seconds",
                 id="seconds-as-string"),
    pytest.param(X509 + "startup_timeout = true\n", "startup_timeout", "number of seconds",
                 id="seconds-as-bool"),
    # ranges
    pytest.param(X509 + "key_file_mode = -1\n", "key_file_mode", "must not be negative",
                 id="mode-negative"),
    pytest.param(X509 + "key_file_mode = -0600\n", "key_file_mode", "got -384",
                 id="mode-negative-octal"),
    pytest.param(X509 + "jwt_svid_file_mode = 010000\n", "jwt_svid_file_mode", "out of range",
                 id="mode-above-07777"),
    pytest.param(X509 + "startup_timeout = 0\n", "startup_timeout", "more than 0",
                 id="startup-timeout-zero"),
    pytest.param(X509 + "startup_timeout = -5\n", "startup_timeout", "more than 0",
                 id="startup-timeout-negative"),
    pytest.param(X509 + "startup_timeout = 1e12\n", "startup_timeout", "at most",
                 id="startup-timeout-huge"),
    # health_checks
    pytest.param(X509 + "health_checks {\n bind_port = 70000\n}\n", "health_checks.bind_port",
                 "out of range", id="port-too-big"),
    pytest.param(X509 + "health_checks {\n bind_port = -1\n}\n", "health_checks.bind_port",
                 "out of range", id="port-negative"),
    pytest.param(X509 + 'health_checks {\n bind_port = "80a"\n}\n', "health_checks.bind_port",
                 "expected a port number", id="port-as-bad-string"),
    pytest.param(X509 + 'health_checks {\n liveness_path = "live"\n}\n',
                 "health_checks.liveness_path", "must start with '/'", id="path-not-absolute"),
    pytest.param(X509 + 'health_checks {\n listener_enabled = true\n liveness_path = "/x"\n'
                 ' readiness_path = "/x"\n}\n', "health_checks.readiness_path", "must differ",
                 id="same-liveness-and-readiness-path"),
    pytest.param(X509 + 'health_checks = "on"\n', "health_checks", "expected a block",
                 id="health-checks-not-a-block"),
    pytest.param(X509 + 'health_checks = ["x"]\n', "health_checks", "expected a block",
                 id="health-checks-list-of-string"),
    # jwt_svids (Go: "'jwt_audience' is required in 'jwt_svids'")
    pytest.param('jwt_svids = "x"\n', "jwt_svids", "expected a block", id="jwt-svids-string"),
    pytest.param('jwt_svids = ["x"]\n', "jwt_svids[0]", "expected a block",
                 id="jwt-svids-entry-string"),
    pytest.param('jwt_svids = [{jwt_svid_file_name = "j"}]\n', "jwt_svids[0].jwt_audience",
                 "is required in each jwt_svids entry", id="jwt-audience-missing"),
    pytest.param(JWT + 'jwt_svids = [{jwt_audience = "b"}]\n',
                 "jwt_svids[1].jwt_svid_file_name", "is required",
                 id="jwt-file-name-missing-in-appended-list"),
    pytest.param('jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "j"},\n'
                 ' {jwt_audience = "", jwt_svid_file_name = "k"}]\n',
                 "jwt_svids[1].jwt_audience", "must not be empty", id="jwt-audience-empty"),
    pytest.param('jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "j",'
                 ' jwt_extra_audiences = "b"}]\n', "jwt_svids[0].jwt_extra_audiences",
                 "expected a list of strings", id="jwt-extra-audiences-string"),
    pytest.param('jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "j",'
                 ' jwt_extra_audiences = ["b", ""]}]\n', "jwt_svids[0].jwt_extra_audiences[1]",
                 "must not be empty", id="jwt-extra-audience-empty"),
    pytest.param('jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "j",'
                 ' jwt_extra_audiences = [1]}]\n', "jwt_svids[0].jwt_extra_audiences[0]",
                 "expected a string", id="jwt-extra-audience-number"),
    # Go's cross-key rules
    pytest.param('svid_file_name = "s.pem"\n', "svid_key_file_name,svid_bundle_file_name",
                 "all or none", id="x509-partial"),
    pytest.param('cmd = "x"\n', "", "no output configured", id="no-output"),
    pytest.param("", "", "no output configured", id="empty-file"),
    pytest.param(X509 + 'pid_file_name = "/run/x.pid"\n', "renew_signal",
                 "required when pid_file_name is set", id="pid-file-needs-renew-signal"),
    pytest.param(X509 + 'pid_file_name = "/run/x.pid"\nrenew_signal = "SIGHUP"\n'
                 "daemon_mode = false\n", "pid_file_name", "only supported in daemon mode",
                 id="pid-file-needs-daemon-mode"),
    pytest.param(X509 + 'renew_signal = "SIGFOO"\n', "renew_signal", "unknown signal",
                 id="unknown-signal"),
    pytest.param(X509 + 'renew_signal = "sighup"\n', "renew_signal", "write SIGHUP",
                 id="signal-lower-case"),
    pytest.param(X509 + "renew_signal = 1\n", "renew_signal", "expected a string",
                 id="signal-number"),
    # our checks
    pytest.param(X509 + 'cert_dir = "/nonexistent/spiffe-helper-test"\n', "cert_dir",
                 "directory does not exist", id="cert-dir-missing"),
    pytest.param(X509 + 'agent_address = "agent.sock"\n', "agent_address", "relative path",
                 id="agent-address-relative"),
    pytest.param(X509 + 'agent_address = "tcp://localhost:8081"\n', "agent_address",
                 "not an IP address", id="agent-address-host-name"),
    pytest.param(X509 + 'agent_address = "unix://host/a.sock"\n', "agent_address",
                 "authority", id="agent-address-authority"),
    pytest.param(X509 + 'cmd_args = "a\\"b"\n', "cmd_args", ERR_BARE_QUOTE,
                 id="cmd-args-bare-quote"),
    pytest.param(X509 + 'cmd_args = "\\"abc"\n', "cmd_args", ERR_QUOTE,
                 id="cmd-args-unterminated-quote"),
    pytest.param('svid_file_name = "s.pem"\nsvid_key_file_name = "s.pem"\n'
                 'svid_bundle_file_name = "b.pem"\n', "svid_key_file_name",
                 "names the same file as svid_file_name", id="same-file-twice"),
    pytest.param(X509 + 'jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "./x/../s.pem"}]\n',
                 "jwt_svids[0].jwt_svid_file_name", "same file as svid_file_name",
                 id="same-file-after-path-join"),
    pytest.param(X509 + 'hint = <<EOT\nline one\nline two\nEOT\n', "hint", "line breaks",
                 id="control-characters-in-heredoc"),
    # syntax
    pytest.param(X509 + 'cmd = \n', "", "HCL syntax error", id="hcl-syntax-error"),
    pytest.param(X509 + "= 1\n", "", "line 4: HCL syntax error: unexpected EQUAL",
                 id="hcl-syntax-error-line"),
    pytest.param('cmd = "abc\n', "", "EOF before closing string quote",
                 id="hcl-unterminated-string"),
    pytest.param(X509 + 'cmd = "a\nb"\n', "cmd", "line 4: line break inside a quoted string",
                 id="hcl-newline-in-quoted-string-like-go"),
    pytest.param(X509 + 'cmd_args = "a\\tb"\n', "cmd_args", "escape sequence \\t is not supported",
                 id="hcl-escape-pyhcl-and-go-differ"),
    pytest.param(X509 + 'hint = "a\\\\\\"b"\n', "hint", "cannot be read reliably",
                 id="hcl-backslash-before-quote"),
    pytest.param('{"svid_file_name": }', "", "JSON syntax error", id="json-syntax-error"),
]


@pytest.mark.parametrize(("text", "key", "message"), ERRORS)
def test_validation_errors(tmp_path: Path, text: str, key: str, message: str) -> None:
    path = write(tmp_path / "helper.conf", text)
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    error = info.value
    assert error.key == key
    assert str(error).startswith(f"{path}: {key + ': ' if key else ''}")
    assert message in error.problem
    assert "\n" not in str(error)
    assert not error.problem[:1].isupper() or error.problem.startswith(("HCL", "JSON", "TOML"))


def test_cert_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory") as info:
        loads(X509 + f'cert_dir = "{tmp_path / "file"}"\n', source="helper.conf", environ={})
    assert info.value.key == "cert_dir"


def test_relative_cert_dir_is_relative_to_working_directory(in_tmp: Path) -> None:
    with pytest.raises(ConfigError, match="directory does not exist"):
        loads(X509 + 'cert_dir = "certs"\n', environ={})
    (in_tmp / "certs").mkdir()
    cfg = loads(X509 + 'cert_dir = "certs"\n', environ={})
    assert cfg.output_path(cfg.svid_file_name) == Path("certs/s.pem")


def test_control_characters_refused_in_strings() -> None:
    with pytest.raises(ConfigError, match="control characters") as info:
        from_mapping({"svid_file_name": "a\x00", "svid_key_file_name": "k",
                      "svid_bundle_file_name": "b"}, source="<code>", environ={})
    assert str(info.value).startswith("<code>: svid_file_name: ")


def test_tab_allowed_in_strings() -> None:
    assert loads(X509 + 'hint = "a\tb"\n', environ={}).hint == "a\tb"


def test_non_mapping_refused() -> None:
    with pytest.raises(ConfigError, match="key = value"):
        from_mapping([("svid_file_name", "s")], environ={})  # type: ignore[arg-type]


# --- reading the file -------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "helper.conf"
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}: file not found"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory") as info:
        load(tmp_path)
    assert info.value.file == str(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "helper.conf"
    path.write_bytes(b'hint = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path / "helper.conf", X509)
    path.chmod(0)
    with pytest.raises(ConfigError, match="cannot read"):
        load(path)


# --- agent address and the environment --------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "environ", "expected"),
    [
        pytest.param('agent_address = "/run/a.sock"\n', {"SPIFFE_ENDPOINT_SOCKET": "/run/b.sock"},
                     "/run/a.sock", id="file-wins-over-environment"),
        pytest.param("", {"SPIFFE_ENDPOINT_SOCKET": "unix:///run/b.sock"}, "unix:///run/b.sock",
                     id="environment-when-unset"),
        pytest.param('agent_address = ""\n', {"SPIFFE_ENDPOINT_SOCKET": "/run/b.sock"},
                     "/run/b.sock", id="environment-when-empty-like-go"),
        pytest.param("", {"SPIFFE_ENDPOINT_SOCKET": ""}, DEFAULT_AGENT_ADDRESS,
                     id="default-when-environment-empty"),
        pytest.param("", {}, DEFAULT_AGENT_ADDRESS, id="default"),
        pytest.param('agent_address = "tcp://127.0.0.1:8081"\n', {}, "tcp://127.0.0.1:8081",
                     id="tcp"),
    ],
)
def test_agent_address_resolution(line: str, environ: dict[str, str], expected: str) -> None:
    cfg = loads(X509 + line, environ=environ)
    assert cfg.agent_address == expected
    assert cfg.address == parse_address(expected)


def test_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", "unix:///run/from-env.sock")
    assert loads(X509).address == Address("unix", path="/run/from-env.sock")


def test_bad_environment_address_names_the_variable() -> None:
    with pytest.raises(AddressError) as info:
        loads(X509, source="helper.conf", environ={"SPIFFE_ENDPOINT_SOCKET": "tcp://localhost:1"})
    assert info.value.key == "SPIFFE_ENDPOINT_SOCKET"
    assert str(info.value).startswith("helper.conf: SPIFFE_ENDPOINT_SOCKET: ")
    assert "environment" in str(info.value)


def test_config_built_in_code_derives_address() -> None:
    assert Config().address == Address("unix", path=DEFAULT_AGENT_ADDRESS)
    assert Config(agent_address="tcp://[::1]:1").address == Address("tcp", host="::1", port=1)
    with pytest.raises(AddressError):
        Config(agent_address="relative.sock")


# --- daemon mode ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "override", "expected"),
    [
        pytest.param("", None, True, id="default-true"),
        pytest.param("daemon_mode = false\n", None, False, id="file-false"),
        pytest.param("daemon_mode = true\n", False, False, id="flag-false-wins"),
        pytest.param("daemon_mode = false\n", True, True, id="flag-true-wins"),
    ],
)
def test_daemon_mode_flag_wins(line: str, override: bool | None, expected: bool) -> None:
    assert loads(X509 + line, daemon_mode=override, environ={}).daemon_mode is expected


def test_daemon_mode_flag_applies_before_pid_file_check() -> None:
    text = X509 + 'pid_file_name = "/run/x.pid"\nrenew_signal = "HUP"\n'
    assert loads(text, environ={}).renew_signal == "SIGHUP"
    with pytest.raises(ConfigError, match="daemon mode"):
        loads(text, daemon_mode=False, environ={})
