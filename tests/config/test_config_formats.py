"""Reading the formats: the Go-style HCL file, Go integer literals, TOML, pyhcl shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_samples import X509, go_conf
from util import write_config as write

from helper.config import (
    HealthChecks,
    JWTSVIDConfig,
    load,
    loads,
)
from helper.errors import ConfigError
from helper.workload.address import Address


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


@pytest.mark.parametrize(("value", "expected"), [('"0644"', 0o644), ('"0x1a4"', 0o644),
                                                 ('"420"', 0o644)])
def test_quoted_integers_are_read_as_go_reads_them(tmp_path: Path, value: str,
                                                    expected: int) -> None:
    # Go's HCL decoder takes a quoted integer through strconv.ParseInt(s, 0, 0)
    cfg = load(write(tmp_path / "helper.conf", X509 + f"cert_file_mode = {value}\n"))
    assert cfg.cert_file_mode == expected
