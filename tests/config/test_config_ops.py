"""The operations keys: bind_address, watch_config, log_level, log_format, and flags that
override the file; plus the status table."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from helper.config import ConfigError, config_warnings, loads
from helper.ops.status import WRITTEN, Status
from helper.ops.status_report import status_document, status_table

X509 = ('svid_file_name = "s.pem"\nsvid_key_file_name = "k.pem"\n'
        'svid_bundle_file_name = "b.pem"\n')


def health(line: str) -> str:
    return X509 + f"health_checks {{\n  listener_enabled = true\n  {line}\n}}\n"


@pytest.mark.parametrize(("value", "stored"), [
    ('""', ""), ('"127.0.0.1"', "127.0.0.1"), ('"0.0.0.0"', "0.0.0.0"), ('"::"', "::"),
    ('"::1"', "::1"), ('"[::1]"', "::1"), ('"fe80:0:0::1"', "fe80::1"),
])
def test_bind_address_takes_ip_literals(value, stored):
    cfg = loads(health(f"bind_address = {value}"), environ={})
    assert cfg.health_checks.bind_address == stored


@pytest.mark.parametrize("value", ['"localhost"', '"1.2.3.4:80"', '"300.1.1.1"', "1"])
def test_bind_address_refuses_anything_else(value):
    with pytest.raises(ConfigError) as info:
        loads(health(f"bind_address = {value}"), source="h.conf", environ={})
    assert info.value.key == "health_checks.bind_address"


def test_defaults():
    cfg = loads(X509, environ={})
    assert (cfg.watch_config, cfg.log_level, cfg.log_format) == (False, "info", "text")
    assert cfg.health_checks.bind_address == ""


@pytest.mark.parametrize(("line", "key", "hint"), [
    ('log_level = "verbose"', "log_level", "one of debug, info, warn, error"),
    ('log_level = "DEBUG"', "log_level", "lower case"),
    ('log_format = "xml"', "log_format", "one of text, json"),
    ("watch_config = 1", "watch_config", "true or false"),
])
def test_bad_values_name_the_key(line, key, hint):
    with pytest.raises(ConfigError) as info:
        loads(X509 + line, source="h.conf", environ={})
    assert info.value.key == key
    assert hint in str(info.value)


def test_command_line_overrides_win_over_the_file_and_are_checked():
    text = X509 + 'log_level = "error"\nlog_format = "json"\n'
    cfg = loads(text, environ={}, overrides={"log_level": "debug"})
    assert (cfg.log_level, cfg.log_format) == ("debug", "json")
    with pytest.raises(ConfigError):
        loads(text, environ={}, overrides={"log_level": "loud"})


def test_toml_takes_the_same_keys():
    text = ('svid_file_name = "s"\nsvid_key_file_name = "k"\nsvid_bundle_file_name = "b"\n'
            'watch_config = true\nlog_level = "warn"\n'
            '[health_checks]\nbind_address = "::1"\n')
    cfg = loads(text, syntax="toml", environ={})
    assert cfg.watch_config
    assert cfg.log_level == "warn"
    assert cfg.health_checks.bind_address == "::1"


def test_watch_config_in_one_shot_mode_is_warned_about():
    cfg = loads(X509 + "watch_config = true\n", daemon_mode=False, environ={})
    assert "watch_config has no effect when daemon_mode is false" in config_warnings(cfg)


def test_status_table_shows_identity_expiry_rotation_and_child():
    now = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
    status = Status(x509_write_status=WRITTEN, spiffe_id="spiffe://example.org/db",
                    x509_serial=0xABC, x509_expiry=now + timedelta(minutes=50),
                    last_rotation=(now - timedelta(minutes=10)).timestamp(), rotations=2,
                    child_state="running", child_pid=4242, child_restarts=1,
                    stream_healthy=True, jwt_expiry={"db": now + timedelta(minutes=4)})
    table = status_table(status_document(status, now))
    assert table.splitlines() == [
        "identity        spiffe://example.org/db",
        "x509 expires    2030-01-01T12:50:00+00:00 (in 50m)",
        "x509 serial     abc",
        "last rotation   2030-01-01T11:50:00+00:00 (10m ago)",
        "rotations       2",
        "jwt db expires  2030-01-01T12:04:00+00:00 (in 4m)",
        "child           running (pid 4242), 1 restart(s)",
        "workload api    healthy",
        "live / ready    yes / yes",
    ]


def test_status_document_has_no_secrets_only_names_and_times():
    doc = status_document(Status(x509_write_status=WRITTEN, spiffe_id="spiffe://e.org/w"),
                          datetime(2030, 1, 1, tzinfo=timezone.utc))
    assert set(doc) == {"version", "config_file", "spiffe_id", "live", "ready", "x509", "jwt",
                        "workload_api", "child", "config_reloads", "refused",
                        "write_failures", "last_error", "last_error_at",
                        "last_error_current", "now"}
