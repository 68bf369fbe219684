"""Live configuration reload: SIGHUP, and with ``watch_config = true`` a change of the file.

The file is read and validated again. An invalid config is logged in one line and the one
in force stays. A valid one takes effect without dropping the child, and the Workload API
stream wherever the change allows it. Every key of the registry has its place in
`RELOAD_EFFECTS` (tests/config/test_reload_keys.py walks the registry, so a new key cannot be
forgotten):

- ``x509``: the current X.509-SVID is written again at once with the new settings (names,
  modes, owner, layouts; files under old names are left where they are);
- ``jwt``: the JWT outputs are brought in line at once: tokens and the bundle file are
  written again (new modes, owner, names), a new ``jwt_svids`` entry is fetched, the file
  of a removed one is removed; turning the JWT outputs on or off starts or stops them;
- ``live``: in force at once, for the next event (health listener re-bound, log settings,
  signals, reload_cmd, agent_address re-connects, clock_skew for the next message, ...);
- ``child``: in force when cmd next starts (its environment and stdin);
- ``restart``: daemon_mode, cmd, cmd_args, and turning the X.509 outputs on or off need a
  new process: they keep their old values, and the reload says so in one line.

This module is pure: `plan_reload` decides what changed and what applies live. The core
(helper/app.py, `Core.reload`) reads the file and puts the plan in force; the file watcher
is helper/config/watch.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from helper.config import Config

X509, JWT, LIVE, CHILD, RESTART = "x509", "jwt", "live", "child", "restart"
EFFECTS = frozenset({X509, JWT, LIVE, CHILD, RESTART})
# What a change of each key does at a reload (health_checks sub-keys dotted).
RELOAD_EFFECTS: dict[str, frozenset[str]] = {
    **dict.fromkeys((
        "svid_file_name", "svid_key_file_name", "svid_bundle_file_name", "cert_file_mode",
        "key_file_mode", "add_intermediates_to_bundle", "include_federated_domains",
        "omit_expired", "x509_svids", "svid_combined_file_name", "pkcs12_file_name",
        "pkcs12_password_file", "credential_folder", "spiffe_bundle_map_file_name",
    ), frozenset({X509})),
    **dict.fromkeys(("cert_dir", "hint", "file_owner", "file_group"), frozenset({X509, JWT})),
    **dict.fromkeys(("jwt_svids", "jwt_bundle_file_name", "jwt_bundle_file_mode",
                     "jwt_svid_file_mode"), frozenset({JWT})),
    **dict.fromkeys((
        "agent_address", "pid_file_name", "renew_signal", "startup_timeout", "watch_config",
        "log_level", "log_format", "renew_action", "stop_signal", "stop_timeout",
        "on_cmd_exit", "reload_debounce", "reload_cmd", "reload_timeout", "clock_skew",
        "health_checks.listener_enabled", "health_checks.bind_port",
        "health_checks.liveness_path", "health_checks.readiness_path",
        "health_checks.bind_address",
    ), frozenset({LIVE})),
    **dict.fromkeys(("cmd_stdin", "cmd_env"), frozenset({CHILD})),
    **dict.fromkeys(("daemon_mode", "cmd", "cmd_args"), frozenset({RESTART})),
}
# Rendering the X.509 files reads these: a change means writing the current SVID again.
REWRITE_KEYS = frozenset(k for k, effects in RELOAD_EFFECTS.items() if X509 in effects)
JWT_KEYS = frozenset(k for k, effects in RELOAD_EFFECTS.items() if JWT in effects)
# Changes that need a new process; their old values stay in force until then.
RESTART_KEYS = tuple(k for k, effects in RELOAD_EFFECTS.items() if RESTART in effects)
X509_NAMES = ("svid_file_name", "svid_key_file_name", "svid_bundle_file_name")
# The keys that turn X.509 outputs on: the X.509 stream runs only when one is set at start.
X509_OUTPUT_KEYS = (*X509_NAMES, "x509_svids", "svid_combined_file_name", "pkcs12_file_name",
                    "credential_folder", "spiffe_bundle_map_file_name")
JWT_OUTPUT_KEYS = ("jwt_svids", "jwt_bundle_file_name")
LOG_KEYS = frozenset({"log_level", "log_format"})


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload from `old` to `new` does."""

    changed: tuple[str, ...]  # every key that differs, nested ones dotted (health_checks.x)
    deferred: tuple[str, ...]  # changed keys that need a restart; their old values stay
    config: Config  # the configuration to put in force

    @property
    def applied(self) -> tuple[str, ...]:
        return tuple(key for key in self.changed if key not in self.deferred)

    @property
    def rewrite_files(self) -> bool:
        return any(key in REWRITE_KEYS for key in self.applied)

    @property
    def rewrite_jwt(self) -> bool:
        return any(key in JWT_KEYS for key in self.applied)

    @property
    def reconnect(self) -> bool:
        return "agent_address" in self.applied

    @property
    def relog(self) -> bool:
        return any(key in LOG_KEYS for key in self.applied)

    def rewrites(self, pipeline: str) -> bool:
        """Whether the outputs of `pipeline` ("x509", "jwt") are written again: the X.509
        files when a key they read changed; the JWT outputs at every reload that applies
        something (their fetchers take the new config then: hint, clock_skew, ...)."""
        return self.rewrite_files if pipeline == X509 else bool(self.applied)


def changed_keys(old: Config, new: Config) -> tuple[str, ...]:
    """Config keys whose values differ, in registry order; health_checks.* one by one."""
    keys: list[str] = []
    for f in dataclasses.fields(Config):
        if f.name in ("source", "address"):
            continue
        before, after = getattr(old, f.name), getattr(new, f.name)
        if before == after:
            continue
        if dataclasses.is_dataclass(before) and not isinstance(before, type):
            keys += [f"{f.name}.{sub.name}" for sub in dataclasses.fields(before)
                     if getattr(before, sub.name) != getattr(after, sub.name)]
        else:
            keys.append(f.name)
    return tuple(keys)


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Decide what a reload from `old` to `new` changes and what can be applied live."""
    changed = changed_keys(old, new)
    deferred = [key for key in RESTART_KEYS if key in changed]
    keep: dict[str, Any] = {key: getattr(old, key) for key in deferred}
    if old.x509_enabled != new.x509_enabled or old.needs_x509 != new.needs_x509:
        # The X.509 stream and its statuses are set up at start.
        deferred += [key for key in X509_OUTPUT_KEYS if key in changed]
        keep.update({key: getattr(old, key) for key in X509_OUTPUT_KEYS})
    config = dataclasses.replace(new, **keep) if keep else new
    if old.needs_jwt and not config.needs_jwt and not config.needs_x509:
        # the JWT outputs cannot stop while nothing else runs
        deferred += [key for key in JWT_OUTPUT_KEYS if key in changed]
        config = dataclasses.replace(config, **{key: getattr(old, key)
                                                for key in JWT_OUTPUT_KEYS})
    return ReloadPlan(changed=changed, deferred=tuple(deferred), config=config)
