"""Config helpers and warnings, the render round trip, the key registry, the reference table."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from config_samples import X509, go_conf
from util import write_config as write

from helper.config import (
    CONFIG_KEYS,
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
