"""Configuration: the Go spiffe-helper's ``helper.conf`` (HCL 1), or the same keys in TOML.

Compatibility with the Go helper:

* HCL integer literals are read as Go's ``strconv.ParseInt(text, 0, 0)`` reads them:
  ``0644`` is octal (420), ``0x1A`` hex, ``08`` an error. pyhcl alone would read
  ``0644`` as 644, so the source is tokenised with pyhcl's own lexer and octal-form
  literals are rewritten to decimal before parsing.
* Quoted HCL strings may use the escapes ``\\"`` and ``\\\\``; other backslash escapes
  and line breaks inside quotes are refused, because pyhcl and Go would read them
  differently.
* Unlike Go's lenient decoder, values must have their real type: ``"true"`` is not a
  boolean and ``"0644"`` is not an HCL integer.

TOML (a file name ending in ``.toml``): the same keys; ``[health_checks]`` is a table and
``[[jwt_svids]]`` an array of tables. File modes may be TOML integers (``0o644``; a plain
``644`` is decimal, as in Go) or strings, which are read as octal (``"0644"``, ``"644"``).

Every key is described once, in the registry ``CONFIG_KEYS``; validation and the README
reference table (``reference_table_markdown``) are driven by it. Adding a key means adding
one ``Key`` entry and the matching dataclass field.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

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
from helper.config.model import (
    DEFAULT_AGENT_ADDRESS,
    ENDPOINT_SOCKET_ENV,
    Account,
    Config,
    HealthChecks,
    JWTSVIDConfig,
    X509SVIDConfig,
)
from helper.config.rules import NAME_MAX, config_warnings, output_file_names, validate
from helper.errors import ConfigError as ConfigError  # re-exported for callers
from helper.safefile import TooLarge, read_small_file

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

from helper.config.checks import MAX_MODE, MAX_STARTUP_TIMEOUT, go_parse_int
from helper.config.checks import one_line as _one_line
from helper.config.checks import shown as _shown

# --- loading -------------------------------------------------------------------------------


def load(
    path: str | os.PathLike[str],
    *,
    daemon_mode: bool | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read, parse and validate a config file (TOML if its name ends in .toml, else HCL).

    ``overrides`` are command-line values that win over the file (``log_level``, ...).
    """
    source = os.fspath(path)
    text = _read_text(source)
    syntax: Literal["hcl", "toml"] = "toml" if source.lower().endswith(".toml") else "hcl"
    return loads(text, source=source, syntax=syntax, daemon_mode=daemon_mode, environ=environ,
                 overrides=overrides)


def loads(
    text: str,
    *,
    source: str = "",
    syntax: Literal["hcl", "toml"] = "hcl",
    daemon_mode: bool | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Parse and validate config text; ``source`` names it in error messages."""
    data = parse_toml(text, source=source) if syntax == "toml" else parse_hcl(text, source=source)
    return from_mapping(
        data, source=source, daemon_mode=daemon_mode, environ=environ,
        mode_strings=syntax == "toml", overrides=overrides,
    )


def _read_text(source: str) -> str:
    try:
        raw = Path(source).read_bytes()
    except FileNotFoundError:
        raise ConfigError("file not found", file=source) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a config file", file=source) from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read: {reason}", file=source) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", file=source) from None









































# --- validation ------------------------------------------------------------------------------








def from_mapping(
    data: Mapping[str, Any],
    *,
    source: str = "",
    daemon_mode: bool | None = None,
    environ: Mapping[str, str] | None = None,
    mode_strings: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Validate parsed config data and build a Config; raise ConfigError on any problem.

    ``daemon_mode`` (the command-line flag) wins over the file. ``mode_strings`` accepts
    file modes written as octal strings (TOML). ``overrides`` (top-level keys set on the
    command line) win over the file and are checked like it. Checks that cert_dir exists.
    """
    cfg = validate(data, source=source, daemon_mode=daemon_mode,
                   environ=os.environ if environ is None else environ,
                   mode_strings=mode_strings, overrides=overrides,
                   user_id=resolve_user, group_id=resolve_group)
    check_cert_dir(cfg)
    check_credential_folder(cfg)
    if cfg.pkcs12_password_file:
        read_password_file(cfg)
    return cfg


def check_credential_folder(cfg: Config) -> None:
    """credential_folder, if set, must be an existing directory (like cert_dir)."""
    if not cfg.credential_folder:
        return
    folder = cfg.output_path(cfg.credential_folder)
    try:
        is_dir = folder.is_dir()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot access {_shown(str(folder))}: {_one_line(str(exc))}",
                          file=cfg.source, key="credential_folder") from None
    if not is_dir:
        raise ConfigError(f"not an existing directory: {_shown(str(folder))}",
                          file=cfg.source, key="credential_folder")


MAX_PASSWORD_BYTES = 4096


def read_password_file(cfg: Config) -> bytes:
    """The PKCS#12 password: the file's bytes without one trailing newline (LF or CRLF).

    Raises ConfigError when the file cannot be read, is empty or too long. The password
    itself never appears in an error.
    """
    where = "pkcs12_password_file"
    try:  # never blocks: a FIFO or device there is refused, not waited on
        data = read_small_file(cfg.pkcs12_password_file, MAX_PASSWORD_BYTES + 2).data
    except TooLarge:
        raise ConfigError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes",
                          file=cfg.source, key=where) from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read {_shown(cfg.pkcs12_password_file)}: {reason}",
                          file=cfg.source, key=where) from None
    password = data.removesuffix(b"\n").removesuffix(b"\r")
    if not password:
        raise ConfigError("the password file is empty; unset pkcs12_password_file for a "
                          "keystore without a password", file=cfg.source, key=where)
    if len(password) > MAX_PASSWORD_BYTES:
        raise ConfigError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes",
                          file=cfg.source, key=where)
    return password


def check_cert_dir(cfg: Config) -> None:
    """The one filesystem check: cert_dir, if set, must be an existing directory."""
    if not cfg.cert_dir:
        return
    try:
        is_dir = Path(cfg.cert_dir).is_dir()
        exists = is_dir or Path(cfg.cert_dir).exists()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot access {_shown(cfg.cert_dir)}: {_one_line(str(exc))}",
                          file=cfg.source, key="cert_dir") from None
    if not exists:
        raise ConfigError(f"directory does not exist: {_shown(cfg.cert_dir)}",
                          file=cfg.source, key="cert_dir")
    if not is_dir:
        raise ConfigError(f"not a directory: {_shown(cfg.cert_dir)}",
                          file=cfg.source, key="cert_dir")














# --- checkers, one per kind --------------------------------------------------------------------












































def resolve_user(value: str) -> int:
    """A user name (looked up first, as chown does) or a numeric id -> uid; KeyError if
    neither."""
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        if value.isascii() and value.isdigit():
            return int(value)
        raise


def resolve_group(value: str) -> int:
    """A group name (looked up first) or a numeric id -> gid; KeyError if neither."""
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        if value.isascii() and value.isdigit():
            return int(value)
        raise











































# --- rendering -------------------------------------------------------------------------------


def render_resolved(cfg: Config) -> str:
    """The resolved configuration as HCL that ``load`` reads back to an equal Config."""
    lines = ["# spiffe-helper: resolved configuration"]
    if cfg.source:
        lines.append(f"# from {_comment_safe(cfg.source)}")
    lines += _render_section(cfg, CONFIG_KEYS, "")
    return "\n".join(lines) + "\n"


def _render_section(obj: Any, keys: Sequence[Key], indent: str) -> list[str]:
    lines: list[str] = []
    for key in keys:
        value = getattr(obj, key.name)
        if key.kind == "block":
            lines.append(f"{indent}{key.name} {{")
            lines += _render_section(value, key.children, indent + "  ")
            lines.append(f"{indent}}}")
        elif key.kind == "env":
            lines.append(f"{indent}{key.name} {{")
            lines += [f"{indent}  {name} = {_hcl_string(text)}" for name, text in value]
            lines.append(f"{indent}}}")
        elif key.kind == "blocks":
            if not value:
                lines.append(f"{indent}{key.name} = []")
                continue
            lines.append(f"{indent}{key.name} = [")
            for item in value:
                lines.append(f"{indent}  {{")
                lines += _render_section(item, key.children, indent + "    ")
                lines.append(f"{indent}  }},")
            lines.append(f"{indent}]")
        else:
            lines.append(f"{indent}{key.name} = {hcl_value(key.kind, value)}")
    return lines


def hcl_value(kind: Kind, value: Any) -> str:
    """A scalar value in HCL syntax (file modes in Go's octal form, 0644)."""
    if kind == "bool":
        return "true" if value else "false"
    if kind == "mode":
        return f"0{value:o}" if value else "0"
    if kind == "port":
        return str(value)
    if kind in ("seconds", "delay"):
        from decimal import Decimal  # check-config only: not worth importing at every start
        number = float(value)
        return str(int(number)) if number.is_integer() else format(Decimal(repr(number)), "f")
    if kind in ("strings", "command"):
        # a heredoc ends at a line of its own, so a newline follows it inside a list
        items = [_hcl_string(item) for item in value]
        return "[" + ", ".join(i + "\n" if i.startswith("<<") else i for i in items) + "]"
    return _hcl_string(str(value))


def _hcl_string(text: str) -> str:
    """A quoted HCL string, or a heredoc when pyhcl cannot read the quoted form back.

    Quoted strings cannot hold two backslashes in a row, a backslash before a quote, a
    trailing backslash (pyhcl misreads them) or ``${`` (HCL reads an interpolation).
    """
    if "\\\\" in text or '\\"' in text or text.endswith("\\") or "${" in text:
        marker = next(m for m in ("EOT", "EOS", "END", "TXT") if m not in text)
        return f"<<{marker}\n{text}\n{marker}"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment_safe(text: str) -> str:
    return "".join("?" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in text)


# --- reference documentation -------------------------------------------------------------------


def reference_table_markdown() -> str:
    """The README reference table of every key, nested keys included."""
    rows = [
        "| key | type | default | example | description |",
        "|-----|------|---------|---------|-------------|",
    ]
    for key, name in _all_keys():
        rows.append(
            f"| `{name}` | {_kind_cell(key)} | {_default_cell(key)} "
            f"| `{_md_escape(key.example)}` | {_md_escape(key.description)} |"
        )
    return "\n".join(rows) + "\n"


def _all_keys() -> list[tuple[Key, str]]:
    """Every key with its documented name (health_checks.bind_port, jwt_svids[].jwt_audience)."""
    keys: list[tuple[Key, str]] = []
    for key in CONFIG_KEYS:
        keys.append((key, key.name))
        separator = "[]." if key.kind == "blocks" else "."
        keys += [(child, f"{key.name}{separator}{child.name}") for child in key.children]
    return keys


_KIND_NAMES: dict[str, str] = {
    "string": "string",
    "bool": "bool",
    "mode": "file mode (octal)",
    "port": "port",
    "seconds": "seconds",
    "strings": "list of strings",
    "signal": "signal name",
    "cmd_args": "string",
    "http_path": "URL path",
    "ip_address": "IP address",
    "choice": "one of",
    "block": "block",
    "blocks": "list of blocks",
    "delay": "seconds",
    "command": "string or list of strings",
    "env": "block of strings",
    "user": "user name or id",
    "group": "group name or id",
}


def _kind_cell(key: Key) -> str:
    if key.kind == "choice":
        return "one of " + ", ".join(f"`{choice}`" for choice in key.choices)
    return _KIND_NAMES[key.kind]


def _default_cell(key: Key) -> str:
    if key.required:
        return "required"
    if key.kind == "block":
        return "see below"
    if key.kind == "blocks":
        return "`[]`"
    if key.kind == "env":
        return "`{}`"
    if key.default == "":
        return '`""`'
    return f"`{_md_escape(hcl_value(key.kind, key.default))}`"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


# --- small helpers ----------------------------------------------------------------------------










