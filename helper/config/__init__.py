"""Configuration: the Go spiffe-helper's ``helper.conf`` (HCL 1), or the same keys in TOML.

The modules, in the order a config flows through them (all pure but ``load``):

* ``model``     -- the frozen dataclasses (``Config``, ``HealthChecks``, ...) and every default;
* ``keys``      -- the registry ``CONFIG_KEYS``: each key described once, declaratively;
* ``hcl``       -- HCL (read as Go reads it) or TOML text into raw values;
* ``checks``    -- one checker per key kind;
* ``rules``     -- the registry walk, the rules across keys and the warnings;
* ``load``      -- the only I/O: the file, cert_dir, credential_folder, the password file,
  the user and group databases;
* ``reference`` -- the resolved config as HCL and the reference table (check-config and the
  docs only: imported on first use, never on a helper run).

This module re-exports their public names: ``from helper.config import Config, load``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from helper.config.checks import MAX_MODE, MAX_STARTUP_TIMEOUT, go_parse_int
from helper.config.hcl import parse_hcl, parse_toml
from helper.config.keys import (
    CONFIG_KEYS,
    HEALTH_CHECK_KEYS,
    JWT_SVID_KEYS,
    LOG_FORMATS,
    LOG_LEVELS,
    REQUIRED,
    SECRET_MODE_KEYS,
    X509_SVID_KEYS,
    Key,
    Kind,
)
from helper.config.load import (
    MAX_PASSWORD_BYTES,
    check_cert_dir,
    check_credential_folder,
    from_mapping,
    load,
    loads,
    read_password_file,
    resolve_group,
    resolve_user,
)
from helper.config.model import (
    DEFAULT_AGENT_ADDRESS,
    ENDPOINT_SOCKET_ENV,
    Account,
    Config,
    HealthChecks,
    JWTSVIDConfig,
    X509SVIDConfig,
)
from helper.config.rules import NAME_MAX, config_warnings, output_file_names
from helper.errors import ConfigError

if TYPE_CHECKING:
    from helper.config.reference import hcl_value, reference_table_markdown, render_resolved

__all__ = [
    "CONFIG_KEYS", "DEFAULT_AGENT_ADDRESS", "ENDPOINT_SOCKET_ENV", "HEALTH_CHECK_KEYS",
    "JWT_SVID_KEYS", "LOG_FORMATS", "LOG_LEVELS", "MAX_MODE", "MAX_PASSWORD_BYTES",
    "MAX_STARTUP_TIMEOUT", "NAME_MAX", "REQUIRED", "SECRET_MODE_KEYS", "X509_SVID_KEYS",
    "Account", "Config", "ConfigError", "HealthChecks", "JWTSVIDConfig", "Key", "Kind",
    "X509SVIDConfig", "check_cert_dir", "check_credential_folder", "config_warnings",
    "from_mapping", "go_parse_int", "hcl_value", "load", "loads", "output_file_names",
    "parse_hcl", "parse_toml", "read_password_file", "reference_table_markdown",
    "render_resolved", "resolve_group", "resolve_user",
]

_REFERENCE_NAMES = frozenset({"hcl_value", "reference_table_markdown", "render_resolved"})


def __getattr__(name: str) -> Any:
    """The ``reference`` names, imported on first use (a helper run never needs them)."""
    if name in _REFERENCE_NAMES:
        from helper.config import reference

        value = getattr(reference, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
