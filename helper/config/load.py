"""Loading a configuration: the only module of helper/config that does I/O.

It reads the config file, checks that ``cert_dir`` and ``credential_folder`` exist, reads
the PKCS#12 password file, and resolves ``file_owner`` / ``file_group`` in the user and
group databases, once (the resolved ids travel with the Config: ``Config.file_owner_id``).
Parsing (``hcl``), checking (``checks``, ``rules``) and the registry (``keys``) are pure.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from helper.config.checks import numeric_id, one_line, shown
from helper.config.hcl import parse_hcl, parse_toml
from helper.config.model import Config
from helper.config.rules import validate
from helper.errors import ConfigError
from helper.safefile import TooLarge, read_small_file


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

    ``rules.validate`` with the process environment (unless ``environ`` is given) and the
    user and group databases, then the checks that look at the filesystem: cert_dir and
    credential_folder exist, the password file is readable.
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


def check_cert_dir(cfg: Config) -> None:
    """cert_dir, if set, must be an existing directory."""
    if not cfg.cert_dir:
        return
    try:
        is_dir = Path(cfg.cert_dir).is_dir()
        exists = is_dir or Path(cfg.cert_dir).exists()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot access {shown(cfg.cert_dir)}: {one_line(str(exc))}",
                          file=cfg.source, key="cert_dir") from None
    if not exists:
        raise ConfigError(f"directory does not exist: {shown(cfg.cert_dir)}",
                          file=cfg.source, key="cert_dir")
    if not is_dir:
        raise ConfigError(f"not a directory: {shown(cfg.cert_dir)}",
                          file=cfg.source, key="cert_dir")


def check_credential_folder(cfg: Config) -> None:
    """credential_folder, if set, must be an existing directory (like cert_dir)."""
    if not cfg.credential_folder:
        return
    folder = cfg.output_path(cfg.credential_folder)
    try:
        is_dir = folder.is_dir()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot access {shown(str(folder))}: {one_line(str(exc))}",
                          file=cfg.source, key="credential_folder") from None
    if not is_dir:
        raise ConfigError(f"not an existing directory: {shown(str(folder))}",
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
        raise ConfigError(f"cannot read {shown(cfg.pkcs12_password_file)}: {reason}",
                          file=cfg.source, key=where) from None
    password = data.removesuffix(b"\n").removesuffix(b"\r")
    if not password:
        raise ConfigError("the password file is empty; unset pkcs12_password_file for a "
                          "keystore without a password", file=cfg.source, key=where)
    if len(password) > MAX_PASSWORD_BYTES:
        raise ConfigError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes",
                          file=cfg.source, key=where)
    return password


def resolve_user(value: str) -> int:
    """A user name (looked up first, as chown does) or a numeric id -> uid; KeyError if
    neither."""
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        return numeric_id(value)


def resolve_group(value: str) -> int:
    """A group name (looked up first) or a numeric id -> gid; KeyError if neither."""
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        return numeric_id(value)
