"""Property tests: any input gives a Config or a ConfigError; rendering round-trips."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from helper.config import (
    CONFIG_KEYS,
    HEALTH_CHECK_KEYS,
    JWT_SVID_KEYS,
    X509_SVID_KEYS,
    Config,
    from_mapping,
    loads,
    render_resolved,
)
from helper.errors import ConfigError

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
