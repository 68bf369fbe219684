"""The configuration as values: frozen dataclasses, and each key's default, declared once.

The defaults written here are the only ones: the key registry (``helper/config/keys.py``)
takes each key's documented default from the matching field. Nothing here does I/O.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from helper.workload.address import Address, parse_address

DEFAULT_AGENT_ADDRESS = "/tmp/spire-agent/public/api.sock"
ENDPOINT_SOCKET_ENV = "SPIFFE_ENDPOINT_SOCKET"
_DEFAULT_ADDRESS = Address(scheme="unix", path=DEFAULT_AGENT_ADDRESS)


class Account(str):
    """A ``file_owner`` or ``file_group`` value as written, with the id it was resolved to.

    ``load`` resolves each account once (the user or group database is read there, never
    later); the id travels with the value, so it survives ``dataclasses.replace``. It is
    equal to the plain string, so a Config built directly (``Config(file_owner="0")``)
    compares and renders alike; such a plain string has no id: nothing is chowned.
    """

    id: int

    def __new__(cls, text: str, ident: int) -> Account:
        account = super().__new__(cls, text)
        account.id = ident
        return account

    def __getnewargs__(self) -> tuple[str, int]:  # type: ignore[override]
        return str(self), self.id


def _resolved_id(value: str) -> int | None:
    return value.id if isinstance(value, Account) else None


@dataclass(frozen=True)
class HealthChecks:
    """The ``health_checks`` block."""

    listener_enabled: bool = False
    bind_port: int = 8081
    liveness_path: str = "/live"
    readiness_path: str = "/ready"
    bind_address: str = ""  # ours; last so that positional construction stays as it was


@dataclass(frozen=True)
class JWTSVIDConfig:
    """One ``jwt_svids`` entry."""

    jwt_audience: str
    jwt_svid_file_name: str
    jwt_extra_audiences: tuple[str, ...] = ()


@dataclass(frozen=True)
class X509SVIDConfig:
    """One ``x509_svids`` entry: an extra identity picked by hint or SPIFFE ID."""

    svid_file_name: str
    svid_key_file_name: str
    svid_bundle_file_name: str
    hint: str = ""
    spiffe_id: str = ""


@dataclass(frozen=True)
class Config:
    """The resolved configuration. ``address`` is always derived from ``agent_address``."""

    source: str = field(default="", compare=False)
    agent_address: str = DEFAULT_AGENT_ADDRESS
    address: Address = _DEFAULT_ADDRESS
    cmd: str = ""
    cmd_args: str = ""
    pid_file_name: str = ""
    cert_dir: str = ""
    daemon_mode: bool = True
    add_intermediates_to_bundle: bool = False
    renew_signal: str = ""
    svid_file_name: str = ""
    svid_key_file_name: str = ""
    svid_bundle_file_name: str = ""
    jwt_svids: tuple[JWTSVIDConfig, ...] = ()
    jwt_bundle_file_name: str = ""
    include_federated_domains: bool = False
    cert_file_mode: int = 0o644
    key_file_mode: int = 0o600
    jwt_bundle_file_mode: int = 0o600
    jwt_svid_file_mode: int = 0o600
    hint: str = ""
    omit_expired: bool = False
    x509_svids: tuple[X509SVIDConfig, ...] = ()
    svid_combined_file_name: str = ""
    pkcs12_file_name: str = ""
    pkcs12_password_file: str = ""
    credential_folder: str = ""
    spiffe_bundle_map_file_name: str = ""
    file_owner: str = ""  # an Account once loaded
    file_group: str = ""  # an Account once loaded
    health_checks: HealthChecks = HealthChecks()
    startup_timeout: float = 60.0
    watch_config: bool = False
    log_level: str = "info"
    log_format: str = "text"
    # supervising cmd (helper/supervise/supervisor.py)
    renew_action: str = "signal"
    stop_signal: str = "SIGTERM"
    stop_timeout: float = 10.0
    on_cmd_exit: str = "renew"
    cmd_stdin: bool = False
    cmd_env: tuple[tuple[str, str], ...] = ()  # (name, value) in the order written
    reload_debounce: float = 0.5
    reload_cmd: tuple[str, ...] = ()  # an argument vector
    reload_timeout: float = 30.0
    clock_skew: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", parse_address(self.agent_address))

    @property
    def x509_enabled(self) -> bool:
        """True when all three X.509 file names are set."""
        return bool(self.svid_file_name and self.svid_key_file_name and self.svid_bundle_file_name)

    @property
    def needs_x509(self) -> bool:
        """True when any output is made from the X.509 stream (not only the Go trio)."""
        return bool(self.x509_enabled or self.x509_svids or self.svid_combined_file_name
                    or self.pkcs12_file_name or self.credential_folder
                    or self.spiffe_bundle_map_file_name)

    @property
    def needs_jwt(self) -> bool:
        """True when JWT-SVIDs or the JWT bundle file are configured."""
        return bool(self.jwt_svids or self.jwt_bundle_file_name)

    @property
    def file_owner_id(self) -> int | None:
        """The uid ``load`` resolved ``file_owner`` to (None: unset, or not loaded)."""
        return _resolved_id(self.file_owner)

    @property
    def file_group_id(self) -> int | None:
        """The gid ``load`` resolved ``file_group`` to (None: unset, or not loaded)."""
        return _resolved_id(self.file_group)

    def output_path(self, name: str) -> Path:
        """``name`` joined to ``cert_dir`` like Go's path.Join ("" means the working directory)."""
        joined = f"{self.cert_dir}/{name}" if self.cert_dir else name
        return Path(posixpath.normpath(joined)) if joined else Path(".")
