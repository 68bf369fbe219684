"""The key registry: every configuration key described once, declaratively.

``CONFIG_KEYS`` drives validation (``checks``, ``rules``), rendering and the reference
table (``reference``). Each ``Key`` says how its value is checked (``kind``), what it
means and an example; its default is not written here but taken from the dataclass field
of the same name (``helper/config/model.py``), so that it is declared once. Adding a key
means adding one ``Key`` entry and the matching dataclass field (a key without a field
fails at import). Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from helper.config.model import (
    ENDPOINT_SOCKET_ENV,
    Config,
    HealthChecks,
    JWTSVIDConfig,
    X509SVIDConfig,
)

LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_FORMATS = ("text", "json", "logfmt")

Kind = Literal[
    "string", "bool", "mode", "port", "seconds", "strings", "signal", "cmd_args", "http_path",
    "ip_address", "choice", "block", "blocks", "delay", "command", "env", "user", "group",
]


class _Required:
    """Marks a key that has no default."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Key:
    """One configuration key: how it is checked and its documentation.

    ``example`` is HCL text. Block kinds name their ``children`` and the dataclass
    (``section``) each block becomes; the ``choice`` kind names its ``choices``.
    ``default`` is not an argument: it is the default of the dataclass field the key
    fills (``REQUIRED`` when the field has none), set by ``_defaults_from``.
    """

    name: str
    kind: Kind
    description: str
    example: str
    children: tuple[Key, ...] = ()
    section: Callable[..., Any] | None = None
    choices: tuple[str, ...] = ()  # kind "choice": the accepted values
    default: Any = field(default=REQUIRED, init=False)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def _defaults_from(model: type[Any], *keys: Key) -> tuple[Key, ...]:
    """``keys``, each given the default of ``model``'s field of the same name."""
    fields = {f.name: f for f in dataclasses.fields(model)}
    for key in keys:
        default = fields[key.name].default  # KeyError: a key without a dataclass field
        object.__setattr__(key, "default", REQUIRED if default is dataclasses.MISSING else default)
    return keys


HEALTH_CHECK_KEYS: tuple[Key, ...] = _defaults_from(
    HealthChecks,
    Key("listener_enabled", "bool",
        "Serve HTTP liveness and readiness endpoints (daemon mode only).", "true"),
    Key("bind_port", "port", "Port of the health HTTP server; 0 means the default.",
        "8081"),
    Key("liveness_path", "http_path", "URL path of the liveness check.", '"/live"'),
    Key("readiness_path", "http_path", "URL path of the readiness check.",
        '"/ready"'),
    Key("bind_address", "ip_address", "IP address the health server listens on; empty "
        "means every interface, as in Go.", '"127.0.0.1"'),
)

X509_SVID_KEYS: tuple[Key, ...] = _defaults_from(
    X509SVIDConfig,
    Key("svid_file_name", "string", "File for this identity's certificate chain.",
        '"internal.pem"'),
    Key("svid_key_file_name", "string", "File for this identity's private key.",
        '"internal_key.pem"'),
    Key("svid_bundle_file_name", "string", "File for this identity's trust bundle.",
        '"internal_bundle.pem"'),
    Key("hint", "string", "Pick the SVID carrying this hint (set hint or spiffe_id).",
        '"internal"'),
    Key("spiffe_id", "string", "Pick the SVID with this SPIFFE ID (set hint or spiffe_id).",
        '"spiffe://example.org/internal"'),
)

JWT_SVID_KEYS: tuple[Key, ...] = _defaults_from(
    JWTSVIDConfig,
    Key("jwt_audience", "string", "Audience the JWT-SVID is requested for.",
        '"your-audience"'),
    Key("jwt_svid_file_name", "string",
        "File (in cert_dir) the JWT-SVID token is written to.", '"jwt_svid.token"'),
    Key("jwt_extra_audiences", "strings", "Further audiences for the same JWT-SVID.",
        '["extra-audience-1"]'),
)

CONFIG_KEYS: tuple[Key, ...] = _defaults_from(
    Config,
    Key("agent_address", "string",
        f"Workload API address: an absolute socket path, unix:///path or tcp://IP:port. "
        f"Unset: ${ENDPOINT_SOCKET_ENV}, else the default.",
        '"/tmp/spire-agent/public/api.sock"'),
    Key("cmd", "string", "Program to start and signal when certificates are renewed "
        "(daemon mode only).", '"ghostunnel"'),
    Key("cmd_args", "cmd_args", 'Arguments of cmd, split on spaces; "double quotes" '
        "group words (Go encoding/csv rules, no shell).", '"server --listen :8002"'),
    Key("pid_file_name", "string", "File holding the PID of a process to signal with "
        "renew_signal on renewal (daemon mode only).", '"/run/nginx.pid"'),
    Key("cert_dir", "string", "Existing directory the files are written to; empty "
        "means the working directory.", '"certs"'),
    Key("daemon_mode", "bool", "Keep running and renewing; false fetches once and "
        "exits. The -daemon-mode flag overrides it.", "false"),
    Key("add_intermediates_to_bundle", "bool", "Write intermediate certificates to "
        "the bundle file instead of the SVID file.", "true"),
    Key("renew_signal", "signal", "Signal sent to cmd or the pid_file_name process "
        "after renewal (SIGHUP or HUP form).", '"SIGHUP"'),
    Key("svid_file_name", "string", "File for the X.509-SVID certificate chain (PEM).",
        '"svid.pem"'),
    Key("svid_key_file_name", "string", "File for the X.509-SVID private key "
        "(PKCS#8 PEM).", '"svid_key.pem"'),
    Key("svid_bundle_file_name", "string", "File for the X.509 trust bundle (PEM).",
        '"svid_bundle.pem"'),
    Key("jwt_svids", "blocks", "JWT-SVIDs to fetch, a list of blocks.",
        '[{jwt_audience = "aud", jwt_svid_file_name = "jwt.token"}]',
        children=JWT_SVID_KEYS, section=JWTSVIDConfig),
    Key("jwt_bundle_file_name", "string", "File for the JWT bundles (JSON).",
        '"jwt_bundle.json"'),
    Key("include_federated_domains", "bool", "Add federated trust domains' "
        "authorities to the bundle file.", "true"),
    Key("cert_file_mode", "mode", "Mode of the certificate and bundle files "
        "(octal; 0 means the default).", "0644"),
    Key("key_file_mode", "mode", "Mode of the private key file (octal).", "0600"),
    Key("jwt_bundle_file_mode", "mode", "Mode of the JWT bundle file (octal).",
        "0600"),
    Key("jwt_svid_file_mode", "mode", "Mode of the JWT-SVID files (octal).", "0600"),
    Key("hint", "string", "Pick the SVID (X.509 and JWT) with this hint; empty means the "
        "first.", '"internal"'),
    Key("omit_expired", "bool", "Leave expired certificates out of the bundle file.",
        "true"),
    Key("x509_svids", "blocks", "More X.509 identities of the same workload, each "
        "written in the Go layout to its own three files; a list of blocks.",
        '[{hint = "internal", svid_file_name = "in.pem", svid_key_file_name = "in_key.pem", '
        'svid_bundle_file_name = "in_bundle.pem"}]',
        children=X509_SVID_KEYS, section=X509SVIDConfig),
    Key("svid_combined_file_name", "string", "File holding the private key, the leaf and "
        "the intermediates in one PEM (HAProxy); mode from key_file_mode.", '"haproxy.pem"'),
    Key("pkcs12_file_name", "string", "PKCS#12 keystore with the key, leaf and "
        "intermediates (alias spiffe) for Java; mode from key_file_mode.", '"keystore.p12"'),
    Key("pkcs12_password_file", "string", "File whose content (one trailing newline "
        "dropped) is the PKCS#12 password; unset: no password.", '"p12.pass"'),
    Key("credential_folder", "string", "Existing folder (in cert_dir) to keep as a SPIFFE "
        "Filesystem Delivery credential folder; exported to cmd as SPIFFE_CREDENTIAL_FOLDER.",
        '"spiffe"'),
    Key("spiffe_bundle_map_file_name", "string", "File for the SPIFFE bundle map (JSON) "
        "that gRPC's SPIFFE mTLS support reads, own and federated trust domains.",
        '"bundle_map.json"'),
    Key("file_owner", "user", "User (name or id) that owns every output file, set on "
        "each write.", '"postgres"'),
    Key("file_group", "group", "Group (name or id) of every output file, set on each "
        "write.", '"postgres"'),
    Key("health_checks", "block", "HTTP health endpoints, a block.",
        "health_checks { listener_enabled = true }",
        children=HEALTH_CHECK_KEYS, section=HealthChecks),
    Key("startup_timeout", "seconds", "One-shot mode (daemon_mode = false) gives up "
        "after this many seconds without a complete fetch.", "30"),
    Key("watch_config", "bool", "Re-read this file when it changes, as on SIGHUP "
        "(daemon mode only).", "true"),
    Key("log_level", "choice", "Least severe messages logged. The --log-level flag "
        "overrides it.", '"debug"', choices=LOG_LEVELS),
    Key("log_format", "choice", "text: one line per event; json: one JSON object "
        "per line; logfmt: time=... level=... msg=\"...\" key=value, the shape of the Go "
        "helper's logrus lines, with the Go helper's msg text for the events both log. The "
        "--log-format flag overrides it.", '"logfmt"', choices=LOG_FORMATS),
    Key("renew_action", "choice", 'What a renewal does to cmd: "signal" sends '
        "renew_signal to it, or starts it again if it has exited (Go behaviour); \"restart\" "
        "stops it with stop_signal and starts it again on the new files.", '"restart"',
        choices=("signal", "restart")),
    Key("stop_signal", "signal", 'Signal that stops cmd (renew_action = "restart", '
        "helper shutdown); its process group is SIGKILLed after stop_timeout.", '"SIGQUIT"'),
    Key("stop_timeout", "seconds", "Seconds cmd gets to exit after stop_signal or a "
        "forwarded SIGTERM/SIGINT before its process group is SIGKILLed.", "30"),
    Key("on_cmd_exit", "choice", 'When cmd exits on its own: "renew" starts it '
        'again at the next renewal (Go behaviour); "exit" ends the helper with cmd\'s exit '
        'status; "restart" starts it again with backoff (1 s doubling to 30 s).', '"exit"',
        choices=("renew", "exit", "restart")),
    Key("cmd_stdin", "bool", "Give cmd the helper's stdin; false gives it /dev/null.",
        "true"),
    Key("cmd_env", "env", "Environment variables added for cmd and reload_cmd, a block "
        "of NAME = \"value\".", '{ LOG_LEVEL = "debug" }'),
    Key("reload_debounce", "delay", "Renewals within this many seconds become one "
        "reload with the last files; 0 reloads at once (never two at a time).", "1"),
    Key("reload_cmd", "command", "Command run after each write that changed files, "
        "the first included (daemon mode only): a string split like cmd_args, or a list of "
        "strings; no shell.",
        '["mariadb-admin", "flush-ssl"]'),
    Key("reload_timeout", "seconds", "reload_cmd is killed (its process group) after "
        "this many seconds and counted as failed.", "10"),
    Key("clock_skew", "delay", "Seconds an X.509-SVID's or a JWT-SVID's notBefore "
        "(nbf) may lie in the future, for a clock that trails the agent's. A newer X.509 "
        "message that is not yet valid even so is kept and written once it is.", "120"),
)


# Modes of files that hold a private key or a token.
SECRET_MODE_KEYS = ("key_file_mode", "jwt_svid_file_mode")
