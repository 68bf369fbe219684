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
from collections.abc import Callable, Mapping, Sequence
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
from helper.errors import AddressError, Refused
from helper.errors import ConfigError as ConfigError  # re-exported for callers
from helper.identity.spiffeid import parse_spiffe_id
from helper.safefile import TooLarge, read_small_file
from helper.workload.address import parse_address
from helper.workload.advice import mode_example

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

from helper.config.checks import CHECKERS as _CHECKERS
from helper.config.checks import MAX_MODE, MAX_STARTUP_TIMEOUT, check_choice, go_parse_int
from helper.config.checks import USE_DEFAULT as _USE_DEFAULT
from helper.config.checks import Context as _Context
from helper.config.checks import describe as _describe
from helper.config.checks import key_text as _key_text
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
    ctx = _Context(source, mode_strings, resolve_user, resolve_group)
    raw: object = data
    if not isinstance(raw, Mapping):
        raise ctx.error("", "the configuration must be a set of key = value pairs")
    _check_unknown_keys(data, ctx)
    values = _check_section(data, CONFIG_KEYS, "", ctx)
    if daemon_mode is not None:
        values["daemon_mode"] = daemon_mode
    if overrides:
        values.update(_check_section(overrides, CONFIG_KEYS, "", ctx))
    values["agent_address"] = _resolve_agent_address(
        values.get("agent_address", ""), os.environ if environ is None else environ, ctx
    )
    cfg = Config(source=source, **values)
    for check in _CONFIG_CHECKS:
        check(cfg, ctx)
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


def _check_unknown_keys(data: Mapping[Any, Any], ctx: _Context) -> None:
    unknown: list[tuple[str, list[str]]] = []
    _collect_unknown(data, CONFIG_KEYS, "", unknown)
    if not unknown:
        return
    names = sorted(name for name, _ in unknown)
    hints = [f"{close[0]} for {name}" for name, close in sorted(unknown) if close]
    problem = "unknown key" if len(names) == 1 else "unknown keys"
    if len(names) == 1 and hints:
        problem += f"; did you mean {unknown[0][1][0]}?"
    elif hints:
        problem += f"; did you mean {', '.join(hints)}?"
    raise ctx.error(",".join(names), problem)


def _collect_unknown(
    data: Mapping[Any, Any], keys: Sequence[Key], prefix: str,
    unknown: list[tuple[str, list[str]]],
) -> None:
    by_name = {key.name: key for key in keys}
    for name, value in data.items():
        key = by_name.get(name) if isinstance(name, str) else None
        if key is None:
            import difflib  # only on this error path: not worth importing at every start

            close = difflib.get_close_matches(str(name), list(by_name), n=1, cutoff=0.75)
            unknown.append((f"{prefix}{_key_text(name)}", close))
        elif key.kind in ("block", "blocks"):
            try:
                blocks = _blocks(key, value, f"{prefix}{name}", _Context("", False))
            except ConfigError:
                continue  # reported with its key once types are checked
            for where, block in blocks:
                _collect_unknown(block, key.children, f"{where}.", unknown)


def _check_section(
    data: Mapping[str, Any], keys: Sequence[Key], prefix: str, ctx: _Context
) -> dict[str, Any]:
    """Check each key of one block; returns the dataclass arguments it sets."""
    values: dict[str, Any] = {}
    for key in keys:
        where = f"{prefix}{key.name}"
        if key.name not in data:
            if key.required:
                raise ctx.error(where, f"is required in each {prefix.split('[')[0]} entry")
            continue
        value = _check_value(key, data[key.name], where, ctx)
        if key.required and value == "":
            raise ctx.error(where, f"must not be empty; it is required in each "
                                   f"{prefix.split('[')[0]} entry")
        if value is not _USE_DEFAULT:
            values[key.name] = value
    return values


def _check_value(key: Key, value: Any, where: str, ctx: _Context) -> Any:
    if key.kind == "block":
        merged: dict[str, Any] = {}  # repeated blocks merge, later keys winning, as in Go
        for _, block in _blocks(key, value, where, ctx):
            merged.update(block)
        assert key.section is not None
        return key.section(**_check_section(merged, key.children, f"{where}.", ctx))
    if key.kind == "choice":
        return check_choice(value, key.choices, where, ctx)
    if key.kind == "blocks":
        assert key.section is not None
        section = key.section
        return tuple(
            section(**_check_section(block, key.children, f"{block_where}.", ctx))
            for block_where, block in _blocks(key, value, where, ctx)
        )
    checked = _CHECKERS[key.kind](value, where, ctx)
    if key.kind == "signal" and checked == "" and key.default:
        return _USE_DEFAULT  # an empty stop_signal means the default, as Go reads ""
    return checked


def _blocks(key: Key, value: Any, where: str, ctx: _Context) -> list[tuple[str, Mapping[str, Any]]]:
    """The block(s) of a block-valued key, with the name each is reported under.

    HCL gives a map for one block and a list of maps for a list or repeated blocks.
    """
    if isinstance(value, Mapping):
        items: list[Any] = [value]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ctx.error(where, f"expected a block {{ ... }}, got {_describe(value)}")
    blocks: list[tuple[str, Mapping[str, Any]]] = []
    for index, item in enumerate(items):
        item_where = where if key.kind == "block" else f"{where}[{index}]"
        if not isinstance(item, Mapping):
            raise ctx.error(item_where, f"expected a block {{ ... }}, got {_describe(item)}")
        blocks.append((item_where, item))
    return blocks


def _resolve_agent_address(configured: str, environ: Mapping[str, str], ctx: _Context) -> str:
    """The file's agent_address, else $SPIFFE_ENDPOINT_SOCKET, else the default; checked."""
    if configured:
        address, where, note = configured, "agent_address", ""
    elif environ.get(ENDPOINT_SOCKET_ENV, ""):
        address, where = environ[ENDPOINT_SOCKET_ENV], ENDPOINT_SOCKET_ENV
        note = " (taken from the environment because agent_address is not set)"
    else:
        return DEFAULT_AGENT_ADDRESS
    try:
        parse_address(address)
    except AddressError as exc:
        raise AddressError(exc.problem + note, file=ctx.source, key=where) from None
    return address


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










# --- checks across keys (Go's rules, then ours) ----------------------------------------------

_X509_KEYS = ("svid_file_name", "svid_key_file_name", "svid_bundle_file_name")


def _check_pid_file(cfg: Config, ctx: _Context) -> None:
    if not cfg.pid_file_name:
        return
    if not cfg.daemon_mode:
        raise ctx.error("pid_file_name", "is only supported in daemon mode (daemon_mode is false)")
    if not cfg.renew_signal:
        raise ctx.error("renew_signal", "is required when pid_file_name is set")


def _check_x509_all_or_none(cfg: Config, ctx: _Context) -> None:
    missing = [name for name in _X509_KEYS if not getattr(cfg, name)]
    if 0 < len(missing) < len(_X509_KEYS):
        raise ctx.error(
            ",".join(missing),
            "all or none of svid_file_name, svid_key_file_name, svid_bundle_file_name "
            "must be set",
        )


def _check_some_output(cfg: Config, ctx: _Context) -> None:
    if not (cfg.needs_x509 or cfg.needs_jwt):
        raise ctx.error(
            "", "no output configured: set svid_file_name, svid_key_file_name and "
            "svid_bundle_file_name, or jwt_svids, or jwt_bundle_file_name (or another output "
            "such as credential_folder)",
        )


def _check_x509_svids(cfg: Config, ctx: _Context) -> None:
    for index, entry in enumerate(cfg.x509_svids):
        where = f"x509_svids[{index}]"
        if bool(entry.hint) == bool(entry.spiffe_id):
            raise ctx.error(where, "set exactly one of hint and spiffe_id")
        if entry.spiffe_id:
            try:
                parse_spiffe_id(entry.spiffe_id)
            except Refused as exc:
                raise ctx.error(f"{where}.spiffe_id", f"not a SPIFFE ID: {exc.detail}") from None


def _check_pkcs12(cfg: Config, ctx: _Context) -> None:
    if cfg.pkcs12_password_file and not cfg.pkcs12_file_name:
        raise ctx.error("pkcs12_password_file", "is set but pkcs12_file_name is not")


def _check_distinct_outputs(cfg: Config, ctx: _Context) -> None:
    seen: dict[Path, str] = {}
    for where, name in output_file_names(cfg):
        path = cfg.output_path(name)
        if path in seen:
            raise ctx.error(where, f"names the same file as {seen[path]} ({path})")
        seen[path] = where


NAME_MAX = 255  # bytes in one file name (Linux, every common file system)


def _check_name_lengths(cfg: Config, ctx: _Context) -> None:
    """Every name the helper writes must fit one directory entry (ENAMETOOLONG otherwise,
    at every write)."""
    names = [("credential_folder", cfg.credential_folder), *output_file_names(cfg)]
    for where, name in names:
        for part in name.split("/"):
            size = len(part.encode("utf-8", "surrogatepass"))
            if size > NAME_MAX:
                raise ctx.error(where, f"a file name in it is {size} bytes long; at most "
                                f"{NAME_MAX} fit in a directory entry (NAME_MAX)")


def _check_health_paths(cfg: Config, ctx: _Context) -> None:
    checks = cfg.health_checks
    if checks.listener_enabled and checks.liveness_path == checks.readiness_path:
        raise ctx.error("health_checks.readiness_path", "must differ from liveness_path")


# Stopping a process with these would leave it stopped, not gone.
_JOB_CONTROL_SIGNALS = frozenset({"SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGCONT"})


def _check_supervisor(cfg: Config, ctx: _Context) -> None:
    if cfg.renew_action != "signal" and not cfg.cmd:
        raise ctx.error("renew_action", f'"{cfg.renew_action}" needs cmd: it restarts the '
                        "process cmd starts")
    if cfg.on_cmd_exit != "renew" and not cfg.cmd:
        raise ctx.error("on_cmd_exit", f'"{cfg.on_cmd_exit}" needs cmd')
    if cfg.reload_cmd and not cfg.daemon_mode:
        raise ctx.error("reload_cmd", "is only supported in daemon mode (daemon_mode is false)")
    if cfg.stop_signal in _JOB_CONTROL_SIGNALS:
        raise ctx.error("stop_signal", f"{cfg.stop_signal} pauses or resumes a process and "
                        "would not stop it; use SIGTERM, SIGINT, SIGQUIT or similar")


_CONFIG_CHECKS: tuple[Callable[[Config, _Context], None], ...] = (
    _check_pid_file,
    _check_supervisor,
    _check_x509_all_or_none,
    _check_some_output,
    _check_x509_svids,
    _check_pkcs12,
    _check_distinct_outputs,
    _check_name_lengths,
    _check_health_paths,
)


def output_file_names(cfg: Config) -> list[tuple[str, str]]:
    """(key, file name) of every configured output file, in registry order."""
    names = [(key, getattr(cfg, key)) for key in _X509_KEYS if getattr(cfg, key)]
    names += [
        (f"x509_svids[{index}].{key}", getattr(entry, key))
        for index, entry in enumerate(cfg.x509_svids) for key in _X509_KEYS
    ]
    names += [
        (f"jwt_svids[{index}].jwt_svid_file_name", jwt.jwt_svid_file_name)
        for index, jwt in enumerate(cfg.jwt_svids)
    ]
    names += [(key, getattr(cfg, key)) for key in _SINGLE_FILE_KEYS if getattr(cfg, key)]
    return names


_SINGLE_FILE_KEYS = ("jwt_bundle_file_name", "svid_combined_file_name", "pkcs12_file_name",
                     "spiffe_bundle_map_file_name")


def config_warnings(cfg: Config) -> list[str]:
    """Accepted settings that have no effect or look like mistakes, one line each.

    The first three are the ones the Go helper warns about.
    """
    warnings: list[str] = []
    if not cfg.daemon_mode:
        if cfg.cmd:
            warnings.append("cmd is set but daemon_mode is false: cmd will be ignored")
        if cfg.renew_signal:
            warnings.append(
                "renew_signal is set but daemon_mode is false: renew_signal will be ignored"
            )
        if cfg.health_checks.listener_enabled:
            warnings.append("health_checks.listener_enabled has no effect when daemon_mode "
                            "is false")
        if cfg.watch_config:
            warnings.append("watch_config has no effect when daemon_mode is false")
    if cfg.cmd_args and not cfg.cmd:
        warnings.append("cmd_args is set but cmd is not: cmd_args will be ignored")
    if cfg.cmd_stdin and not cfg.cmd:
        warnings.append("cmd_stdin is set but cmd is not: cmd_stdin will be ignored")
    if cfg.cmd_env and not (cfg.cmd or cfg.reload_cmd):
        warnings.append("cmd_env is set but neither cmd nor reload_cmd is: cmd_env will be "
                        "ignored")
    if cfg.renew_action == "restart" and cfg.renew_signal and not cfg.pid_file_name:
        warnings.append('renew_signal is not sent to cmd when renew_action is "restart": '
                        "renew_signal will be ignored")
    if cfg.pkcs12_file_name and not cfg.pkcs12_password_file:
        warnings.append("pkcs12_file_name without pkcs12_password_file: the private key is "
                        "not encrypted, and Java's KeyStore cannot read an unencrypted key; "
                        "set a password for Java")
    for key in CONFIG_KEYS:
        mode = getattr(cfg, key.name) if key.kind == "mode" else 0
        if mode & 0o7000:
            warnings.append(
                f"{key.name} is 0{mode:o}, which sets setuid, setgid or sticky bits; "
                f"write modes {mode_example(cfg.source)}"
            )
    for name in SECRET_MODE_KEYS:
        mode = getattr(cfg, name)
        if mode & 0o007:
            warnings.append(
                f"{name} is 0{mode:o}: every user on this machine can read the secrets "
                f"written with it (a mode without a leading 0 is decimal, as in Go); "
                f"0600 or 0640 keeps them private"
            )
    return warnings


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










