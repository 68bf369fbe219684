"""Every config key is applied at a reload or is restart-only, said so (issue 12, item 8).

The registry walk makes a new key fail here until its reload effect is decided.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import signal
import stat
from pathlib import Path

import pytest
from util import BASE_CONF, HelperProcess, leaf_serial, wait_for

from helper.config import CONFIG_KEYS, Config, HealthChecks, JWTSVIDConfig, X509SVIDConfig
from helper.config.reload_plan import (
    CHILD,
    EFFECTS,
    JWT,
    LIVE,
    RELOAD_EFFECTS,
    RESTART,
    X509,
    plan_reload,
)

BASE = Config(source="/etc/spiffe-helper/helper.conf", agent_address="/run/agent.sock",
              svid_file_name="svid.pem", svid_key_file_name="key.pem",
              svid_bundle_file_name="bundle.pem", cmd="nginx", renew_signal="SIGHUP",
              jwt_svids=(JWTSVIDConfig("db", "db.token"),), jwt_bundle_file_name="jwt.json")

# A value different from BASE's for every key: a new key needs one here.
OTHER_VALUE: dict[str, object] = {
    "agent_address": "unix:///run/other.sock", "cmd": "haproxy", "cmd_args": "-f x",
    "pid_file_name": "/run/x.pid", "cert_dir": "/tmp", "daemon_mode": False,
    "add_intermediates_to_bundle": True, "renew_signal": "SIGUSR1",
    "svid_file_name": "a.pem", "svid_key_file_name": "a.key", "svid_bundle_file_name": "a.ca",
    "jwt_svids": (JWTSVIDConfig("db", "db.token"), JWTSVIDConfig("web", "web.token")),
    "jwt_bundle_file_name": "jwks.json", "include_federated_domains": True,
    "cert_file_mode": 0o640, "key_file_mode": 0o400, "jwt_bundle_file_mode": 0o640,
    "jwt_svid_file_mode": 0o640, "hint": "internal", "omit_expired": True,
    "x509_svids": (X509SVIDConfig("b.pem", "b.key", "b.ca", hint="b"),),
    "svid_combined_file_name": "combined.pem", "pkcs12_file_name": "ks.p12",
    "pkcs12_password_file": "/etc/pw", "credential_folder": "creds",
    "spiffe_bundle_map_file_name": "map.json", "file_owner": "0", "file_group": "0",
    "startup_timeout": 5.0, "watch_config": True, "log_level": "debug", "log_format": "json",
    "renew_action": "restart", "stop_signal": "SIGINT", "stop_timeout": 3.0,
    "on_cmd_exit": "exit", "cmd_stdin": True, "cmd_env": (("A", "b"),),
    "reload_debounce": 0.0, "reload_cmd": ("true",), "reload_timeout": 5.0, "clock_skew": 5.0,
    "health_checks.listener_enabled": True, "health_checks.bind_port": 9090,
    "health_checks.liveness_path": "/l", "health_checks.readiness_path": "/r",
    "health_checks.bind_address": "127.0.0.1",
}


def registry_keys() -> list[str]:
    keys = []
    for key in CONFIG_KEYS:
        if key.kind == "block":  # health_checks: its keys one by one
            keys += [f"{key.name}.{child.name}" for child in key.children]
        else:
            keys.append(key.name)
    return keys


def test_every_registry_key_has_a_reload_effect():
    keys = registry_keys()
    assert set(RELOAD_EFFECTS) == set(keys)
    for key in keys:
        effects = RELOAD_EFFECTS[key]
        assert effects, key
        assert effects <= EFFECTS, key
        assert RESTART not in effects or effects == {RESTART}, key


def edit(key: str, value: object) -> Config:
    if key.startswith("health_checks."):
        sub = key.split(".", 1)[1]
        return dataclasses.replace(BASE, health_checks=dataclasses.replace(HealthChecks(),
                                                                           **{sub: value}))
    return dataclasses.replace(BASE, **{key: value})


def value_of(cfg: Config, key: str) -> object:
    if key.startswith("health_checks."):
        return getattr(cfg.health_checks, key.split(".", 1)[1])
    return getattr(cfg, key)


@pytest.mark.parametrize("key", registry_keys())
def test_a_reload_applies_each_key_or_keeps_its_old_value_and_says_so(key):
    assert set(OTHER_VALUE) == set(RELOAD_EFFECTS)
    effects = RELOAD_EFFECTS[key]
    new = edit(key, OTHER_VALUE[key])
    assert value_of(new, key) != value_of(BASE, key)
    plan = plan_reload(BASE, new)
    assert plan.changed == (key,)
    if RESTART in effects:
        assert plan.deferred == (key,)
        assert value_of(plan.config, key) == value_of(BASE, key)
        return
    assert plan.applied == (key,)
    assert value_of(plan.config, key) == OTHER_VALUE[key]
    assert plan.rewrite_files == (X509 in effects)
    assert plan.rewrite_jwt == (JWT in effects)
    assert effects & {X509, JWT, LIVE, CHILD}


# --- end to end: the keys the review named take effect at once -----------------------------

CONF = BASE_CONF + """\
jwt_bundle_file_name = "jwt_bundle.json"
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sighup_applies_output_changes_at_once_without_a_rotation(tmp_path, agent, certs):
    (certs / "creds").mkdir()
    password = tmp_path / "pw"
    password.write_text("secret\n")
    path = tmp_path / "helper.conf"
    before = CONF.format(socket=agent.socket_path, cert_dir=certs) + """\
jwt_svid_file_mode = 0600
jwt_svids = [{jwt_audience = "db", jwt_svid_file_name = "db.token"},
             {jwt_audience = "old", jwt_svid_file_name = "old.token"}]
"""
    path.write_text(before)
    log = tmp_path / "helper.log"
    with HelperProcess("-config", str(path), log=log) as helper:
        wait_for(lambda: (certs / "db.token").exists() and (certs / "old.token").exists()
                 and leaf_serial(certs / "svid.pem"), what="first writes")
        serial = leaf_serial(certs / "svid.pem")
        pushes = agent.push_count
        root = os.geteuid() == 0
        owner = 'file_owner = "nobody"\n' if root else ""
        after = CONF.format(socket=agent.socket_path, cert_dir=certs) + f"""\
jwt_svid_file_mode = 0640
jwt_svids = [{{jwt_audience = "db", jwt_svid_file_name = "db.token"}},
             {{jwt_audience = "new", jwt_svid_file_name = "new.token"}}]
svid_combined_file_name = "combined.pem"
pkcs12_file_name = "keystore.p12"
pkcs12_password_file = "{password}"
credential_folder = "creds"
spiffe_bundle_map_file_name = "bundle_map.json"
{owner}"""
        path.write_text(after)
        helper.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "now in force" in helper.output(), what="the reload")
        wait_for(lambda: (certs / "new.token").exists(), what="the added entry fetched")
        wait_for(lambda: not (certs / "old.token").exists(), what="the removed entry's file")
        wait_for(lambda: mode(certs / "db.token") == 0o640, what="the new JWT-SVID mode")
        for name in ("combined.pem", "keystore.p12", "bundle_map.json",
                     "creds/credential-bundle.private-key.x509.pem"):
            wait_for(lambda n=name: (certs / n).exists(), what=name)
        if root:
            nobody = pwd.getpwnam("nobody").pw_uid
            for name in ("svid.pem", "svid_key.pem", "db.token", "jwt_bundle.json",
                         "combined.pem"):
                wait_for(lambda n=name: (certs / n).stat().st_uid == nobody,
                         what=f"{name} owned by file_owner")
        # all of it from the SVID in memory: no new message was needed
        assert leaf_serial(certs / "svid.pem") == serial
        assert agent.push_count == pushes
        assert helper.proc.poll() is None


def test_a_restart_only_change_is_said_in_one_line_and_keeps_the_old_value(tmp_path, agent,
                                                                           certs):
    path = tmp_path / "helper.conf"
    path.write_text(CONF.format(socket=agent.socket_path, cert_dir=certs)
                    + 'cmd = "/bin/sleep"\ncmd_args = "300"\n')
    with HelperProcess("-config", str(path), log=tmp_path / "helper.log") as helper:
        wait_for(lambda: leaf_serial(certs / "svid.pem"), what="first write")
        path.write_text(CONF.format(socket=agent.socket_path, cert_dir=certs)
                        + 'cmd = "/bin/sleep"\ncmd_args = "301"\ncert_file_mode = 0640\n')
        helper.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "now in force" in helper.output(), what="the reload")
        lines = [line for line in helper.output().splitlines() if "restarted" in line]
        assert len(lines) == 1, lines
        assert "cmd_args" in lines[0]
        assert "old values stay" in lines[0]
        wait_for(lambda: mode(certs / "svid.pem") == 0o640, what="the applied key")


def test_jwt_outputs_turned_on_and_off_by_a_reload(tmp_path, agent, certs):
    x509_only = CONF.format(socket=agent.socket_path, cert_dir=certs).replace(
        'jwt_bundle_file_name = "jwt_bundle.json"\n', "")
    path = tmp_path / "helper.conf"
    path.write_text(x509_only)
    with HelperProcess("-config", str(path), log=tmp_path / "helper.log") as helper:
        wait_for(lambda: leaf_serial(certs / "svid.pem"), what="first write")
        path.write_text(x509_only + 'jwt_svids = [{jwt_audience = "db", '
                        'jwt_svid_file_name = "db.token"}]\n')
        helper.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: (certs / "db.token").exists(), what="the JWT outputs started")
        path.write_text(x509_only)
        helper.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: not (certs / "db.token").exists(), what="the JWT outputs stopped")
        assert helper.proc.poll() is None
        assert "Traceback" not in helper.output()
