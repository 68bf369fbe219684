"""Validation driven by the key registry, and the rules across keys: pure.

``validate`` walks ``CONFIG_KEYS`` over the parsed data (unknown keys, then each key's
checker from ``checks``), builds the ``Config`` and applies the cross-key rules (Go's,
then ours). ``config_warnings`` lists accepted settings that look like mistakes. The
filesystem checks (cert_dir, credential_folder, the password file) and the user and group
databases are ``load``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from helper.config.checks import (
    CHECKERS,
    USE_DEFAULT,
    Context,
    check_choice,
    describe,
    key_text,
    numeric_id,
)
from helper.config.keys import CONFIG_KEYS, SECRET_MODE_KEYS, Key
from helper.config.model import DEFAULT_AGENT_ADDRESS, ENDPOINT_SOCKET_ENV, Config
from helper.errors import AddressError, ConfigError, Refused
from helper.identity.spiffeid import parse_spiffe_id
from helper.workload.address import parse_address
from helper.workload.advice import mode_example


def validate(
    data: Mapping[str, Any],
    *,
    environ: Mapping[str, str],
    source: str = "",
    daemon_mode: bool | None = None,
    mode_strings: bool = False,
    overrides: Mapping[str, Any] | None = None,
    user_id: Callable[[str], int] = numeric_id,
    group_id: Callable[[str], int] = numeric_id,
) -> Config:
    """Check parsed config data and build a Config; raise ConfigError on any problem.

    ``daemon_mode`` (the command-line flag) wins over the file. ``mode_strings`` accepts
    file modes written as octal strings (TOML). ``overrides`` (top-level keys set on the
    command line) win over the file and are checked like it. ``environ`` supplies
    $SPIFFE_ENDPOINT_SOCKET; ``user_id`` and ``group_id`` resolve file_owner and
    file_group (see ``checks.Context``).
    """
    ctx = Context(source, mode_strings, user_id, group_id)
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
        values.get("agent_address", ""), environ, ctx
    )
    cfg = Config(source=source, **values)
    for check in _CONFIG_CHECKS:
        check(cfg, ctx)
    return cfg


def _check_unknown_keys(data: Mapping[Any, Any], ctx: Context) -> None:
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
            unknown.append((f"{prefix}{key_text(name)}", close))
        elif key.kind in ("block", "blocks"):
            try:
                blocks = _blocks(key, value, f"{prefix}{name}", Context("", False))
            except ConfigError:
                continue  # reported with its key once types are checked
            for where, block in blocks:
                _collect_unknown(block, key.children, f"{where}.", unknown)


def _check_section(
    data: Mapping[str, Any], keys: Sequence[Key], prefix: str, ctx: Context
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
        if value is not USE_DEFAULT:
            values[key.name] = value
    return values


def _check_value(key: Key, value: Any, where: str, ctx: Context) -> Any:
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
    checked = CHECKERS[key.kind](value, where, ctx)
    if key.kind == "signal" and checked == "" and key.default:
        return USE_DEFAULT  # an empty stop_signal means the default, as Go reads ""
    return checked


def _blocks(key: Key, value: Any, where: str, ctx: Context) -> list[tuple[str, Mapping[str, Any]]]:
    """The block(s) of a block-valued key, with the name each is reported under.

    HCL gives a map for one block and a list of maps for a list or repeated blocks.
    """
    if isinstance(value, Mapping):
        items: list[Any] = [value]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ctx.error(where, f"expected a block {{ ... }}, got {describe(value)}")
    blocks: list[tuple[str, Mapping[str, Any]]] = []
    for index, item in enumerate(items):
        item_where = where if key.kind == "block" else f"{where}[{index}]"
        if not isinstance(item, Mapping):
            raise ctx.error(item_where, f"expected a block {{ ... }}, got {describe(item)}")
        blocks.append((item_where, item))
    return blocks


def _resolve_agent_address(configured: str, environ: Mapping[str, str], ctx: Context) -> str:
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


# --- checks across keys (Go's rules, then ours) ----------------------------------------------

_X509_KEYS = ("svid_file_name", "svid_key_file_name", "svid_bundle_file_name")


def _check_pid_file(cfg: Config, ctx: Context) -> None:
    if not cfg.pid_file_name:
        return
    if not cfg.daemon_mode:
        raise ctx.error("pid_file_name", "is only supported in daemon mode (daemon_mode is false)")
    if not cfg.renew_signal:
        raise ctx.error("renew_signal", "is required when pid_file_name is set")


def _check_x509_all_or_none(cfg: Config, ctx: Context) -> None:
    missing = [name for name in _X509_KEYS if not getattr(cfg, name)]
    if 0 < len(missing) < len(_X509_KEYS):
        raise ctx.error(
            ",".join(missing),
            "all or none of svid_file_name, svid_key_file_name, svid_bundle_file_name "
            "must be set",
        )


def _check_some_output(cfg: Config, ctx: Context) -> None:
    if not (cfg.needs_x509 or cfg.needs_jwt):
        raise ctx.error(
            "", "no output configured: set svid_file_name, svid_key_file_name and "
            "svid_bundle_file_name, or jwt_svids, or jwt_bundle_file_name (or another output "
            "such as credential_folder)",
        )


def _check_x509_svids(cfg: Config, ctx: Context) -> None:
    for index, entry in enumerate(cfg.x509_svids):
        where = f"x509_svids[{index}]"
        if bool(entry.hint) == bool(entry.spiffe_id):
            raise ctx.error(where, "set exactly one of hint and spiffe_id")
        if entry.spiffe_id:
            try:
                parse_spiffe_id(entry.spiffe_id)
            except Refused as exc:
                raise ctx.error(f"{where}.spiffe_id", f"not a SPIFFE ID: {exc.detail}") from None


def _check_pkcs12(cfg: Config, ctx: Context) -> None:
    if cfg.pkcs12_password_file and not cfg.pkcs12_file_name:
        raise ctx.error("pkcs12_password_file", "is set but pkcs12_file_name is not")


def _check_distinct_outputs(cfg: Config, ctx: Context) -> None:
    seen: dict[Path, str] = {}
    for where, name in output_file_names(cfg):
        path = cfg.output_path(name)
        if path in seen:
            raise ctx.error(where, f"names the same file as {seen[path]} ({path})")
        seen[path] = where


NAME_MAX = 255  # bytes in one file name (Linux, every common file system)


def _check_name_lengths(cfg: Config, ctx: Context) -> None:
    """Every name the helper writes must fit one directory entry (ENAMETOOLONG otherwise,
    at every write)."""
    names = [("credential_folder", cfg.credential_folder), *output_file_names(cfg)]
    for where, name in names:
        for part in name.split("/"):
            size = len(part.encode("utf-8", "surrogatepass"))
            if size > NAME_MAX:
                raise ctx.error(where, f"a file name in it is {size} bytes long; at most "
                                f"{NAME_MAX} fit in a directory entry (NAME_MAX)")


def _check_health_paths(cfg: Config, ctx: Context) -> None:
    checks = cfg.health_checks
    if checks.listener_enabled and checks.liveness_path == checks.readiness_path:
        raise ctx.error("health_checks.readiness_path", "must differ from liveness_path")


# Stopping a process with these would leave it stopped, not gone.
_JOB_CONTROL_SIGNALS = frozenset({"SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGCONT"})


def _check_supervisor(cfg: Config, ctx: Context) -> None:
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


_CONFIG_CHECKS: tuple[Callable[[Config, Context], None], ...] = (
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
