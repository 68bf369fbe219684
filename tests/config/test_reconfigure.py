"""What a config reload changes and what it can apply live: the pure decision."""

from __future__ import annotations

import dataclasses

import pytest

from helper.config import Config, HealthChecks, JWTSVIDConfig
from helper.config.reload_plan import changed_keys, plan_reload

BASE = Config(source="/etc/spiffe-helper/helper.conf", agent_address="/run/agent.sock",
              svid_file_name="svid.pem", svid_key_file_name="key.pem",
              svid_bundle_file_name="bundle.pem", cmd="nginx", renew_signal="SIGHUP")


def edit(**changes) -> Config:
    return dataclasses.replace(BASE, **changes)


def test_the_same_config_changes_nothing():
    plan = plan_reload(BASE, edit(source="elsewhere.conf"))
    assert plan.changed == ()
    assert not plan.rewrite_files
    assert not plan.reconnect
    assert not plan.relog


@pytest.mark.parametrize("change", [
    {"svid_file_name": "server.crt"}, {"svid_key_file_name": "server.key"},
    {"cert_dir": "/tmp"}, {"cert_file_mode": 0o640}, {"key_file_mode": 0o400},
    {"add_intermediates_to_bundle": True}, {"include_federated_domains": True},
    {"omit_expired": True}, {"hint": "internal"},
])
def test_output_changes_apply_live_by_writing_the_current_svid_again(change):
    plan = plan_reload(BASE, edit(**change))
    assert plan.changed == tuple(change)
    assert plan.deferred == ()
    assert plan.rewrite_files
    assert not plan.reconnect
    assert plan.config == edit(**change)


@pytest.mark.parametrize("change", [
    {"renew_signal": "SIGUSR1"}, {"pid_file_name": "/run/x.pid"},
    {"jwt_bundle_file_name": "jwt.json"},
    {"jwt_svids": (JWTSVIDConfig("aud", "a.jwt"),)}, {"watch_config": True},
])
def test_changes_read_on_the_next_event_apply_without_rewriting(change):
    plan = plan_reload(BASE, edit(**change))
    assert plan.applied == tuple(change)
    assert not plan.rewrite_files
    assert plan.config == edit(**change)


def test_agent_address_reconnects():
    plan = plan_reload(BASE, edit(agent_address="unix:///run/other.sock"))
    assert plan.reconnect
    assert plan.config.address.path == "/run/other.sock"


def test_log_settings_apply_at_once():
    plan = plan_reload(BASE, edit(log_level="debug", log_format="json"))
    assert plan.relog
    assert plan.applied == ("log_level", "log_format")


def test_health_check_changes_are_named_one_by_one():
    new = edit(health_checks=HealthChecks(True, 9090, "/live", "/ready", "127.0.0.1"))
    assert changed_keys(BASE, new) == ("health_checks.listener_enabled",
                                       "health_checks.bind_port",
                                       "health_checks.bind_address")
    assert plan_reload(BASE, new).deferred == ()


def test_process_changes_wait_for_a_restart_and_keep_their_old_values():
    plan = plan_reload(BASE, edit(cmd="haproxy", cmd_args="-f x", daemon_mode=False,
                                  svid_file_name="new.pem"))
    assert plan.deferred == ("daemon_mode", "cmd", "cmd_args")
    assert plan.applied == ("svid_file_name",)
    assert (plan.config.cmd, plan.config.cmd_args, plan.config.daemon_mode) == ("nginx", "",
                                                                                 True)
    assert plan.config.svid_file_name == "new.pem"


def test_turning_x509_off_waits_for_a_restart():
    new = edit(svid_file_name="", svid_key_file_name="", svid_bundle_file_name="",
               jwt_bundle_file_name="jwt.json")
    plan = plan_reload(BASE, new)
    assert set(plan.deferred) == {"svid_file_name", "svid_key_file_name",
                                  "svid_bundle_file_name"}
    assert plan.config.x509_enabled
    assert plan.config.svid_file_name == "svid.pem"
    assert plan.config.jwt_bundle_file_name == "jwt.json"
    assert not plan.rewrite_files
