"""Configuration loading, validation, rendering and the key registry."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from util import write_config as write

from helper.config import (
    CONFIG_KEYS,
    DEFAULT_AGENT_ADDRESS,
    HEALTH_CHECK_KEYS,
    JWT_SVID_KEYS,
    X509_SVID_KEYS,
    Config,
    HealthChecks,
    JWTSVIDConfig,
    X509SVIDConfig,
    config_warnings,
    from_mapping,
    load,
    loads,
    reference_table_markdown,
    render_resolved,
)
from helper.errors import AddressError, ConfigError
from helper.supervise.cmdargs import ERR_BARE_QUOTE, ERR_QUOTE
from helper.workload.address import Address, parse_address

X509 = 'svid_file_name = "s.pem"\nsvid_key_file_name = "k.pem"\nsvid_bundle_file_name = "b.pem"\n'


def go_conf(cert_dir: Path) -> str:
    """A helper.conf as Go users write it: octal modes, a health_checks block, jwt_svids list."""
    return f"""\
# Go spiffe-helper configuration
agent_address = "/tmp/spire-agent/public/api.sock"
cmd = "/usr/bin/mysql"
// MySQL reload query
cmd_args = "-e \\"ALTER INSTANCE RELOAD TLS;\\""
cert_dir = "{cert_dir}"
renew_signal = "SIGUSR1"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
cert_file_mode = 0644
key_file_mode = 0600
jwt_bundle_file_mode = 0640
jwt_svid_file_mode = 0400
jwt_bundle_file_name = "jwt_bundle.json"
jwt_svids = [
  {{
    jwt_svid_file_name = "jwt_svid.token"
    jwt_audience = "your-audience"
    jwt_extra_audiences = ["your-extra-audience-1", "your-extra-audience-2"]
  }},
  {{
    jwt_audience = "other"
    jwt_svid_file_name = "other.token"
  }}
]
add_intermediates_to_bundle = true
include_federated_domains = true
omit_expired = true
hint = "internal"
/* a multi-line
   comment */
health_checks {{
  listener_enabled = true
  bind_port = 8082
  liveness_path = "/healthz"
}}
"""


def toml_conf(cert_dir: Path) -> str:
    """The same configuration in TOML: modes as native octal integers and as strings."""
    return f"""\
agent_address = "/tmp/spire-agent/public/api.sock"
cmd = "/usr/bin/mysql"
cmd_args = '-e "ALTER INSTANCE RELOAD TLS;"'
cert_dir = "{cert_dir}"
renew_signal = "USR1"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
cert_file_mode = 0o644
key_file_mode = "0600"
jwt_bundle_file_mode = "640"
jwt_svid_file_mode = "0o400"
jwt_bundle_file_name = "jwt_bundle.json"
add_intermediates_to_bundle = true
include_federated_domains = true
omit_expired = true
hint = "internal"

[[jwt_svids]]
jwt_svid_file_name = "jwt_svid.token"
jwt_audience = "your-audience"
jwt_extra_audiences = ["your-extra-audience-1", "your-extra-audience-2"]

[[jwt_svids]]
jwt_audience = "other"
jwt_svid_file_name = "other.token"

[health_checks]
listener_enabled = true
bind_port = 8082
liveness_path = "/healthz"
"""


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty working directory (relative cert_dir and file names resolve here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- the Go-style file ------------------------------------------------------------------------


def test_go_style_helper_conf(tmp_path: Path, certs: Path) -> None:
    path = write(tmp_path / "helper.conf", go_conf(certs))
    cfg = load(path, environ={})
    assert cfg.source == str(path)
    assert cfg.agent_address == "/tmp/spire-agent/public/api.sock"
    assert cfg.address == Address("unix", path="/tmp/spire-agent/public/api.sock")
    assert cfg.cmd == "/usr/bin/mysql"
    assert cfg.cmd_args == '-e "ALTER INSTANCE RELOAD TLS;"'
    assert cfg.cert_dir == str(certs)
    assert cfg.renew_signal == "SIGUSR1"
    assert cfg.daemon_mode is True
    assert cfg.cert_file_mode == 0o644
    assert cfg.key_file_mode == 0o600
    assert cfg.jwt_bundle_file_mode == 0o640
    assert cfg.jwt_svid_file_mode == 0o400
    assert cfg.jwt_svids == (
        JWTSVIDConfig("your-audience", "jwt_svid.token",
                      ("your-extra-audience-1", "your-extra-audience-2")),
        JWTSVIDConfig("other", "other.token"),
    )
    assert cfg.health_checks == HealthChecks(
        listener_enabled=True, bind_port=8082, liveness_path="/healthz", readiness_path="/ready"
    )
    assert cfg.add_intermediates_to_bundle
    assert cfg.include_federated_domains
    assert cfg.omit_expired
    assert cfg.hint == "internal"
    assert cfg.x509_enabled
    assert cfg.startup_timeout == 60.0
    assert cfg.output_path("svid.pem") == certs / "svid.pem"


def test_toml_equivalent_gives_equal_config(tmp_path: Path, certs: Path) -> None:
    from_hcl = load(write(tmp_path / "helper.conf", go_conf(certs)), environ={})
    from_toml = load(write(tmp_path / "helper.toml", toml_conf(certs)), environ={})
    assert from_toml == from_hcl
    assert from_toml.source.endswith("helper.toml")


def test_go_testdata_helper_conf_decimal_modes(in_tmp: Path) -> None:
    """Go's testdata has `cert_file_mode = 444`: decimal 444 (0o674), as ParseInt reads it."""
    (in_tmp / "certs").mkdir()
    cfg = loads(
        'cert_dir = "certs"\ncert_file_mode = 444\nkey_file_mode = 444\n' + X509, environ={}
    )
    assert cfg.cert_file_mode == 444 == 0o674


# --- integer literals as Go reads them --------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        pytest.param("0644", 0o644, id="go-leading-zero-is-octal"),
        pytest.param("0600", 0o600, id="go-octal-0600"),
        pytest.param("00644", 0o644, id="go-octal-two-leading-zeros"),
        pytest.param("07777", 0o7777, id="go-octal-max-mode"),
        pytest.param("0x1A4", 0o644, id="go-hex"),
        pytest.param("0X1a4", 0o644, id="go-hex-upper-x"),
        pytest.param("420", 0o644, id="go-decimal"),
        pytest.param("644", 644, id="go-decimal-644-is-not-octal"),
        pytest.param("1", 1, id="go-decimal-one"),
        pytest.param("0", 0o644, id="go-zero-means-default"),
        pytest.param("00", 0o644, id="go-octal-zero-means-default"),
    ],
)
def test_mode_literals_read_like_go_parseint(literal: str, expected: int) -> None:
    cfg = loads(f"cert_file_mode = {literal}\n" + X509, environ={})
    assert cfg.cert_file_mode == expected


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        pytest.param("cert_file_mode = 08\n", "cert_file_mode", "line 1: illegal octal number 08",
                     id="go-scanner-illegal-octal-08"),
        pytest.param("\n\nkey_file_mode = 0649\n", "key_file_mode",
                     "line 3: illegal octal number 0649", id="go-scanner-illegal-octal-with-line"),
        pytest.param("health_checks {\n  bind_port = 08081\n}\n", "health_checks.bind_port",
                     "line 2: illegal octal number 08081", id="go-scanner-illegal-octal-in-block"),
        pytest.param('jwt_svids = [{jwt_audience = "a"}, {jwt_audience = 09}]\n',
                     "jwt_svids[1].jwt_audience", "line 1: illegal octal number 09",
                     id="go-scanner-illegal-octal-in-list"),
        pytest.param("cert_file_mode = 01777777777777777777777\n", "cert_file_mode",
                     "out of range", id="go-parseint-out-of-range"),
    ],
)
def test_illegal_integer_literals(text: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads(text + X509, source="helper.conf", environ={})
    assert str(info.value).startswith(f"helper.conf: {key}: ")
    assert message in str(info.value)


def test_octal_rewrite_leaves_strings_comments_and_floats_alone() -> None:
    cfg = loads(
        'cmd_args = "0644 -n 010"\n'
        "# cert_file_mode = 08\n"
        "// key_file_mode = 09\n"
        "/* jwt_svid_file_mode = 089 */\n"
        'hint = "08"\n'
        "startup_timeout = 010e1\n"
        "health_checks {\n  bind_port = 010\n}\n" + X509,
        environ={},
    )
    assert cfg.cmd_args == "0644 -n 010"
    assert cfg.hint == "08"
    assert cfg.startup_timeout == 100.0  # Go scans 010e1 as the float 100
    assert cfg.health_checks.bind_port == 8
    assert cfg.cert_file_mode == 0o644


def test_float_startup_timeout() -> None:
    assert loads("startup_timeout = 1.5\n" + X509, environ={}).startup_timeout == 1.5
    assert loads("startup_timeout = 30\n" + X509, environ={}).startup_timeout == 30.0


# --- TOML -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        pytest.param("0o644", 0o644, id="toml-native-octal"),
        pytest.param("644", 644, id="toml-decimal-integer-as-go"),
        pytest.param('"0644"', 0o644, id="toml-string-leading-zero-octal"),
        pytest.param('"644"', 0o644, id="toml-string-is-octal"),
        pytest.param('"0o644"', 0o644, id="toml-string-0o-prefix"),
        pytest.param('"0"', 0o644, id="toml-string-zero-default"),
    ],
)
def test_toml_modes(tmp_path: Path, literal: str, expected: int) -> None:
    path = write(tmp_path / "h.toml", f"cert_file_mode = {literal}\n" + X509)
    assert load(path, environ={}).cert_file_mode == expected


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        pytest.param("cert_file_mode = \n", "", "TOML syntax error", id="toml-syntax"),
        pytest.param('cert_file_mode = "0649"\n', "cert_file_mode", "octal file mode",
                     id="toml-mode-string-not-octal"),
        pytest.param('cert_file_mode = "rw-r--r--"\n', "cert_file_mode", "octal file mode",
                     id="toml-mode-string-symbolic"),
        pytest.param("hint = 1979-05-27\n", "hint", "expected a string", id="toml-date"),
        pytest.param('bind_port = "8081"\n', "bind_port", "unknown key",
                     id="toml-nested-key-at-top-level"),
        pytest.param('[health_checks]\nbind_port = "port"\n', "health_checks.bind_port",
                     "expected a port number", id="toml-port-string"),
    ],
)
def test_toml_errors(tmp_path: Path, text: str, key: str, message: str) -> None:
    path = write(tmp_path / "helper.toml", X509 + text)
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    assert str(info.value).startswith(f"{path}: ")
    assert info.value.key == key
    assert message in str(info.value)


# --- pyhcl shapes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("health_checks {\n listener_enabled = true\n}\nhealth_checks {\n"
                     " bind_port = 9000\n}\n", HealthChecks(True, 9000),
                     id="repeated-blocks-merge"),
        pytest.param("health_checks = {\n listener_enabled = true\n}\n", HealthChecks(True),
                     id="block-assigned-as-map"),
        pytest.param("health_checks = [{\n listener_enabled = true\n}]\n", HealthChecks(True),
                     id="block-as-list-of-one"),
        pytest.param("health_checks {\n}\n", HealthChecks(), id="empty-block"),
        pytest.param("health_checks {\n listener_enabled = true\n bind_port = 1\n}\n"
                     "health_checks {\n bind_port = 2\n liveness_path = \"/l\"\n}\n",
                     HealthChecks(True, 2, "/l"), id="repeated-blocks-later-keys-win-like-go"),
        pytest.param("health_checks = [{listener_enabled = true}, {bind_port = 1}]\n",
                     HealthChecks(True, 1), id="list-of-blocks-merge"),
        pytest.param('health_checks {\n liveness_path = ""\n bind_port = 0\n}\n', HealthChecks(),
                     id="empty-path-and-zero-port-mean-default"),
    ],
)
def test_health_checks_shapes(text: str, expected: HealthChecks) -> None:
    assert loads(text + X509, environ={}).health_checks == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('jwt_svids {\n jwt_audience = "a"\n jwt_svid_file_name = "a.jwt"\n}\n',
                     (JWTSVIDConfig("a", "a.jwt"),), id="single-block"),
        pytest.param('jwt_svids {\n jwt_audience = "a"\n jwt_svid_file_name = "a.jwt"\n}\n'
                     'jwt_svids {\n jwt_audience = "b"\n jwt_svid_file_name = "b.jwt"\n}\n',
                     (JWTSVIDConfig("a", "a.jwt"), JWTSVIDConfig("b", "b.jwt")),
                     id="repeated-blocks-keep-all-keys"),
        pytest.param('jwt_svids {\n jwt_audience = "a"\n jwt_svid_file_name = "a.jwt"\n}\n'
                     'jwt_svids = [{jwt_audience = "b", jwt_svid_file_name = "b.jwt"}]\n'
                     'jwt_svids {\n jwt_audience = "c"\n jwt_svid_file_name = "c.jwt"\n}\n',
                     (JWTSVIDConfig("a", "a.jwt"), JWTSVIDConfig("b", "b.jwt"),
                      JWTSVIDConfig("c", "c.jwt")), id="blocks-and-list-mixed"),
        pytest.param('jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "a.jwt"}]\n'
                     'jwt_svids = [{jwt_audience = "b", jwt_svid_file_name = "b.jwt"}]\n',
                     (JWTSVIDConfig("a", "a.jwt"), JWTSVIDConfig("b", "b.jwt")),
                     id="repeated-lists-append-like-go-decodeSlice"),
        pytest.param('jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "a.jwt"}]\n',
                     (JWTSVIDConfig("a", "a.jwt"),), id="inline-list"),
        pytest.param("jwt_svids = []\n", (), id="empty-list"),
    ],
)
def test_jwt_svids_shapes(text: str, expected: tuple[JWTSVIDConfig, ...]) -> None:
    assert loads(text + X509, environ={}).jwt_svids == expected


def test_json_input_like_go_hcl() -> None:
    cfg = loads('{"svid_file_name": "s", "svid_key_file_name": "k", "svid_bundle_file_name": "b",'
                ' "cert_file_mode": 420}', environ={})
    assert cfg.x509_enabled
    assert cfg.cert_file_mode == 0o644


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "helper.conf"
    path.write_bytes(b"\xef\xbb\xbf" + X509.encode())
    assert load(path, environ={}).svid_file_name == "s.pem"


def test_jwt_bundle_alone_is_an_output() -> None:
    cfg = loads('jwt_bundle_file_name = "b.json"\n', environ={})
    assert not cfg.x509_enabled
    assert cfg.jwt_bundle_file_name == "b.json"


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


# --- Config helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cert_dir", "name", "expected"),
    [
        pytest.param("", "svid.pem", "svid.pem", id="empty-cert-dir-is-cwd"),
        pytest.param("certs", "svid.pem", "certs/svid.pem", id="relative"),
        pytest.param("certs/", "svid.pem", "certs/svid.pem", id="trailing-slash"),
        pytest.param("/etc/x", "a/b.pem", "/etc/x/a/b.pem", id="subdirectory"),
        pytest.param("certs", "/abs.pem", "certs/abs.pem", id="go-path-join-keeps-absolute-inside"),
        pytest.param("certs", "../x.pem", "x.pem", id="go-path-join-cleans-dotdot"),
        pytest.param("", "/abs.pem", "/abs.pem", id="absolute-name-without-cert-dir"),
        pytest.param("./certs", "./a.pem", "certs/a.pem", id="dot-segments"),
    ],
)
def test_output_path_like_go_path_join(cert_dir: str, name: str, expected: str) -> None:
    assert Config(cert_dir=cert_dir).output_path(name) == Path(expected)


def test_x509_enabled() -> None:
    assert not Config().x509_enabled
    assert not Config(svid_file_name="s", svid_key_file_name="k").x509_enabled
    cfg = Config(svid_file_name="s", svid_key_file_name="k", svid_bundle_file_name="b")
    assert cfg.x509_enabled


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(X509, [], id="none"),
        pytest.param(X509 + 'daemon_mode = false\ncmd = "x"\n', ["cmd is set"], id="cmd-one-shot"),
        pytest.param(X509 + 'daemon_mode = false\nrenew_signal = "HUP"\n', ["renew_signal is set"],
                     id="signal-one-shot"),
        pytest.param(X509 + "daemon_mode = false\nhealth_checks {\n listener_enabled = true\n}\n",
                     ["listener_enabled"], id="health-one-shot"),
        pytest.param(X509 + 'cmd_args = "a"\n', ["cmd_args is set"], id="args-without-cmd"),
        pytest.param(X509 + "cert_file_mode = 644\n", ["cert_file_mode is 01204"],
                     id="decimal-mode-sets-sticky-bit"),
    ],
)
def test_config_warnings(text: str, expected: list[str]) -> None:
    warnings = config_warnings(loads(text, environ={}))
    assert len(warnings) == len(expected)
    for warning, fragment in zip(warnings, expected, strict=True):
        assert fragment in warning


# --- render_resolved round trip ---------------------------------------------------------------


def test_render_round_trip_go_conf(tmp_path: Path, certs: Path) -> None:
    cfg = load(write(tmp_path / "helper.conf", go_conf(certs)), environ={})
    text = render_resolved(cfg)
    assert "cert_file_mode = 0644\n" in text
    assert "key_file_mode = 0600\n" in text
    assert "jwt_svid_file_mode = 0400\n" in text
    again = load(write(tmp_path / "resolved.conf", text), environ={"SPIFFE_ENDPOINT_SOCKET": "/x"})
    assert again == cfg


def test_render_round_trip_environment_address() -> None:
    cfg = loads(X509, environ={"SPIFFE_ENDPOINT_SOCKET": "tcp://127.0.0.1:9"})
    text = render_resolved(cfg)
    assert 'agent_address = "tcp://127.0.0.1:9"' in text
    assert loads(text, environ={}) == cfg


@pytest.mark.parametrize(
    "hint",
    [
        pytest.param('say "hi"', id="quotes"),
        pytest.param("C:\\dir", id="single-backslash"),
        pytest.param("a\\\\b", id="double-backslash-heredoc"),
        pytest.param('a\\"b', id="backslash-quote-heredoc"),
        pytest.param("ends\\", id="trailing-backslash-heredoc"),
        pytest.param("ends EOT\\", id="heredoc-marker-inside"),
        pytest.param("tab\there", id="tab"),
        pytest.param("${HOME} # not // a comment", id="interpolation-and-comment-text"),
        pytest.param("ünïcødé ✓", id="unicode"),
    ],
)
def test_render_round_trip_awkward_strings(hint: str) -> None:
    cfg = from_mapping({"hint": hint, "cmd_args": hint.replace('"', "'"),
                        "jwt_bundle_file_name": "b.json"}, environ={})
    assert loads(render_resolved(cfg), environ={}) == cfg


def test_render_names_source_in_a_comment() -> None:
    cfg = loads(X509, source="my\nfile.conf", environ={})
    first_lines = render_resolved(cfg).splitlines()[:2]
    assert first_lines[1] == "# from my?file.conf"


# --- the key registry and the reference table -------------------------------------------------


def documented_names() -> list[str]:
    names = []
    for key in CONFIG_KEYS:
        names.append(key.name)
        separator = "[]." if key.kind == "blocks" else "."
        names += [f"{key.name}{separator}{child.name}" for child in key.children]
    return names


def test_reference_table_lists_every_key() -> None:
    table = reference_table_markdown()
    assert table.splitlines()[0] == "| key | type | default | example | description |"
    for name in documented_names():
        assert f"| `{name}` |" in table
    assert "| `health_checks.bind_port` | port | `8081` |" in table
    assert "| `cert_file_mode` | file mode (octal) | `0644` |" in table
    assert "| `jwt_svids[].jwt_audience` | string | required |" in table
    assert len(table.splitlines()) == 2 + len(documented_names())


@pytest.mark.parametrize(
    ("keys", "cls", "skip"),
    [
        pytest.param(CONFIG_KEYS, Config, {"source", "address"}, id="Config"),
        pytest.param(HEALTH_CHECK_KEYS, HealthChecks, set(), id="HealthChecks"),
        pytest.param(JWT_SVID_KEYS, JWTSVIDConfig, set(), id="JWTSVIDConfig"),
        pytest.param(X509_SVID_KEYS, X509SVIDConfig, set(), id="X509SVIDConfig"),
    ],
)
def test_registry_matches_dataclass_fields(keys: Any, cls: Any, skip: set[str]) -> None:
    """A key is a registry entry plus a dataclass field of the same name and default."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    assert [key.name for key in keys] == [name for name in fields if name in {k.name for k in keys}]
    assert {key.name for key in keys} == set(fields)
    for key in keys:
        field = fields[key.name]
        if key.required:
            assert field.default is dataclasses.MISSING
        else:
            assert field.default == key.default, key.name


# What a list entry needs besides the documented key, per list of blocks.
BLOCK_BASES = {
    "jwt_svids": {"jwt_audience": '"a"', "jwt_svid_file_name": '"j"'},
    "x509_svids": {"svid_file_name": '"x.pem"', "svid_key_file_name": '"xk.pem"',
                   "svid_bundle_file_name": '"xb.pem"', "hint": '"h"'},
}
# Keys whose example needs another key set.
EXAMPLE_NEEDS = {"pkcs12_password_file": 'pkcs12_file_name = "k.p12"\n'}


def reference_example_text(key_name: str) -> str:
    """A config using the documented example of one key (nested keys inside their block)."""
    # cmd too: renew_action and on_cmd_exit examples need it (a key repeated later wins)
    base = (X509 + 'renew_signal = "SIGHUP"\ncmd = "/usr/sbin/nginx"\n'
            + EXAMPLE_NEEDS.get(key_name, ""))
    for key in CONFIG_KEYS:
        if key.name == key_name:
            return base + (key.example if key.kind == "block" else f"{key.name} = {key.example}")
        for child in key.children:
            if f"{key.name}.{child.name}" == key_name and key.kind == "block":
                return base + f"{key.name} {{\n  {child.name} = {child.example}\n}}\n"
            if f"{key.name}[].{child.name}" == key_name:
                entry = dict(BLOCK_BASES[key.name])
                if child.name == "spiffe_id":
                    entry.pop("hint")  # one of hint and spiffe_id
                entry[child.name] = child.example
                items = ", ".join(f"{name} = {value}" for name, value in entry.items())
                return base + f"{key.name} = [{{{items}}}]\n"
    raise AssertionError(key_name)


@pytest.mark.parametrize("name", documented_names())
def test_reference_examples_are_valid(in_tmp: Path, name: str) -> None:
    (in_tmp / "certs").mkdir()
    (in_tmp / "spiffe").mkdir()  # credential_folder's example
    (in_tmp / "p12.pass").write_text("secret\n")  # pkcs12_password_file's example
    loads(reference_example_text(name) + "\n", environ={})


# --- property tests ---------------------------------------------------------------------------

def config_or_error(call: Callable[[], Config]) -> Config | ConfigError:
    """The Config, or the ConfigError; any other exception fails the test."""
    try:
        return call()
    except ConfigError as exc:
        return exc


ALL_NAMES = [key.name for key in CONFIG_KEYS]
CHILD_NAMES = [key.name for key in HEALTH_CHECK_KEYS + JWT_SVID_KEYS + X509_SVID_KEYS]

SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from(["s.pem", "0644", "/tmp/a.sock", "tcp://127.0.0.1:1", "SIGHUP", ""])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(CHILD_NAMES) | st.text(max_size=4), inner, max_size=4),
    max_leaves=8,
)


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(ALL_NAMES) | st.text(max_size=6), VALUES, max_size=8),
       st.booleans())
def test_from_mapping_gives_config_or_config_error(
    data: dict[str, Any], mode_strings: bool
) -> None:
    result = config_or_error(lambda: from_mapping(data, environ={}, mode_strings=mode_strings))
    assert isinstance(result, Config) or "\n" not in str(result)


HCL_PIECES = st.sampled_from(
    [f"{name} = " for name in ALL_NAMES]
    + [f"{name} = " for name in CHILD_NAMES]
    + ["health_checks {", "jwt_svids = [{", "}", "]", "[", "{", "\n", " ", "=", ",", "0644",
       "08", "0x1f", "-1", "1.5", "1e3", "true", '"s.pem"', '"k.pem"', '"b.pem"', '"a\\"b"',
       '"\\\\"', '"', "#", "//", "/*", "*/", "<<EOT\n", "EOT\n", "${", "x", "\\", "é"]
)


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(HCL_PIECES, max_size=20).map("".join) | st.text(max_size=40))
def test_hcl_text_gives_config_or_config_error(text: str) -> None:
    result = config_or_error(lambda: loads(text, source="fuzz.conf", environ={}))
    if isinstance(result, ConfigError):
        assert str(result).startswith("fuzz.conf: ")
        assert "\n" not in str(result)


TOML_PIECES = st.sampled_from(
    [f"{name} = " for name in ALL_NAMES]
    + ["[health_checks]\n", "[[jwt_svids]]\n", "\n", '"0644"', "0o644", "08", "true", '"s.pem"',
       "[", "]", "{", "}", "=", "1979-05-27", "'x'", '"', "#", "1e400", "9" * 30]
)


@settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TOML_PIECES, max_size=16).map("".join) | st.text(max_size=40))
def test_toml_text_gives_config_or_config_error(text: str) -> None:
    result = config_or_error(lambda: loads(text, source="fuzz.toml", syntax="toml", environ={}))
    if isinstance(result, ConfigError):
        assert str(result).startswith("fuzz.toml: ")


NAMES = st.text(
    alphabet=st.sampled_from(list("abc.-_ /\\\"'\t$#{}EOTé")), min_size=1, max_size=10
)


@st.composite
def valid_configs(draw: st.DrawFn) -> Config:
    data: dict[str, Any] = {
        "svid_file_name": "x-" + draw(NAMES),
        "svid_key_file_name": "y-" + draw(NAMES),
        "svid_bundle_file_name": "z-" + draw(NAMES),
        "hint": draw(NAMES),
        "cmd": draw(NAMES),
        "cert_file_mode": draw(st.integers(0, 0o7777)),
        "key_file_mode": draw(st.integers(0, 0o7777)),
        "daemon_mode": draw(st.booleans()),
        "renew_signal": draw(st.sampled_from(["", "HUP", "SIGUSR1", "TERM"])),
        "startup_timeout": draw(st.floats(min_value=0.001, max_value=1e6)),
        "health_checks": {"bind_port": draw(st.integers(0, 65535)),
                          "listener_enabled": draw(st.booleans())},
        "jwt_svids": [
            {"jwt_audience": draw(NAMES), "jwt_svid_file_name": f"j{index}-" + draw(NAMES),
             "jwt_extra_audiences": draw(st.lists(NAMES, max_size=2))}
            for index in range(draw(st.integers(0, 2)))
        ],
    }
    try:
        return from_mapping(data, environ={})
    except ConfigError:
        assume(False)
        raise


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(valid_configs())
def test_render_round_trip_property(cfg: Config) -> None:
    assert loads(render_resolved(cfg), environ={}) == cfg


@pytest.mark.parametrize(("value", "expected"), [('"0644"', 0o644), ('"0x1a4"', 0o644),
                                                 ('"420"', 0o644)])
def test_quoted_integers_are_read_as_go_reads_them(tmp_path: Path, value: str,
                                                    expected: int) -> None:
    # Go's HCL decoder takes a quoted integer through strconv.ParseInt(s, 0, 0)
    cfg = load(write(tmp_path / "helper.conf", X509 + f"cert_file_mode = {value}\n"))
    assert cfg.cert_file_mode == expected


@pytest.mark.parametrize(("line", "warned"), [
    ("key_file_mode = 444", True),  # decimal 444 is 0674, as Go reads it: world-readable key
    ("key_file_mode = 0644", True),
    ("jwt_svid_file_mode = 0604", True),
    ("key_file_mode = 0640", False),
    ("key_file_mode = 0600", False),
])
def test_a_secret_file_mode_readable_by_everyone_is_warned_about(tmp_path: Path, line: str,
                                                                  warned: bool) -> None:
    from helper.config import config_warnings

    cfg = load(write(tmp_path / "helper.conf", X509 + line + "\n"))
    hits = [w for w in config_warnings(cfg) if "every user on this machine" in w]
    assert bool(hits) == warned, hits
