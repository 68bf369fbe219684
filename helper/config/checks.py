"""The per-kind checkers: one function per ``Key.kind`` that turns a raw value into the
value the dataclass holds, or raises ConfigError naming the key.

Pure: a checker looks only at the value and its ``Context``. Accounts (``file_owner``,
``file_group``) are resolved through the functions the context carries: ``load`` passes
the user and group databases (the only place they are read); the default here reads
numeric ids only.
"""

from __future__ import annotations

import ipaddress
import re
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from helper.config.model import Account
from helper.errors import ConfigError
from helper.supervise.cmdargs import split_cmd_args

MAX_MODE = 0o7777
MAX_STARTUP_TIMEOUT = 365 * 24 * 3600.0
INT64_LIMIT = 2**63
_MAX_SHOWN = 80


def numeric_id(text: str) -> int:
    """A user or group id written in digits; KeyError for anything else (a name)."""
    if text.isascii() and text.isdigit():
        return int(text)
    raise KeyError(text)


@dataclass(frozen=True)
class Context:
    """What checking a value needs besides the value.

    ``source`` names the file in errors; ``mode_strings`` accepts file modes written as
    octal strings (TOML); ``user_id`` and ``group_id`` resolve a ``file_owner`` or
    ``file_group`` value (a name or a numeric id) to its id, raising KeyError if unknown.
    """

    source: str
    mode_strings: bool
    user_id: Callable[[str], int] = numeric_id
    group_id: Callable[[str], int] = numeric_id

    def error(self, where: str, problem: str) -> ConfigError:
        return ConfigError(problem, file=self.source, key=where)


class UseDefault:
    """Returned by a checker when the value means 'the default' (Go's 0 or "")."""


USE_DEFAULT = UseDefault()


def _check_string(value: Any, where: str, ctx: Context) -> str:
    if not isinstance(value, str):
        raise ctx.error(where, f"expected a string, got {describe(value)}")
    if has_control_characters(value):
        raise ctx.error(where, "must not contain line breaks or other control characters")
    return value


def _check_bool(value: Any, where: str, ctx: Context) -> bool:
    if isinstance(value, bool):
        return value
    hint = ""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        hint = f"; write {value.lower()} without quotes"
    raise ctx.error(where, f"expected true or false, got {describe(value)}{hint}")


def _check_int(value: Any, where: str, ctx: Context, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if not -INT64_LIMIT <= value < INT64_LIMIT:
            raise ctx.error(where, f"expected {what}, got {describe(value)}")
        return value
    if isinstance(value, str):
        # Go's HCL decoder reads a quoted integer with strconv.ParseInt(s, 0, 0):
        # "0644" is octal there too, so a Go config that quotes its modes keeps working.
        parsed = go_parse_int(value)
        if parsed is not None and -INT64_LIMIT <= parsed < INT64_LIMIT:
            return parsed
    raise ctx.error(where, f"expected {what}, got {describe(value)}")


_GO_INT_BASES = {"0x": 16, "0X": 16, "0o": 8, "0O": 8, "0b": 2, "0B": 2}


def go_parse_int(text: str) -> int | None:
    """Go's strconv.ParseInt(text, 0, 64) without underscores: None when it would fail."""
    sign, body = (-1, text[1:]) if text[:1] == "-" else (1, text.removeprefix("+"))
    base = _GO_INT_BASES.get(body[:2], 0)
    if base:
        body = body[2:]
    elif len(body) > 1 and body[0] == "0":
        base, body = 8, body[1:]
    else:
        base = 10
    if not body or not body.isascii() or not body.isalnum():
        return None
    try:
        return sign * int(body, base)
    except ValueError:
        return None


def _check_mode(value: Any, where: str, ctx: Context) -> int | UseDefault:
    if ctx.mode_strings and isinstance(value, str):
        mode = _octal_string(value, where, ctx)
    else:
        mode = _check_int(value, where, ctx, "an octal file mode such as 0644")
    if mode < 0:
        raise ctx.error(where, f"file mode must not be negative, got {mode}")
    if mode > MAX_MODE:
        raise ctx.error(where, f"file mode 0{mode:o} is out of range (0 to 07777)")
    return USE_DEFAULT if mode == 0 else mode


def _octal_string(value: str, where: str, ctx: Context) -> int:
    text = value.strip()
    digits = text[2:] if text[:2] in ("0o", "0O") else text
    if not digits or any(ch not in "01234567" for ch in digits):
        raise ctx.error(where, f"expected an octal file mode such as \"0644\", got {shown(value)}")
    return int(digits, 8)


def _check_port(value: Any, where: str, ctx: Context) -> int | UseDefault:
    port = _check_int(value, where, ctx, "a port number")
    if not 0 <= port <= 65535:
        raise ctx.error(where, f"port {port} is out of range (1 to 65535; 0 means 8081)")
    return USE_DEFAULT if port == 0 else port


def _seconds(value: Any, where: str, ctx: Context, *, zero_allowed: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ctx.error(where, f"expected a number of seconds, got {describe(value)}")
    # comparisons: huge ints exactly, NaN always False
    above_floor = value >= 0 if zero_allowed else value > 0
    if not (above_floor and value <= MAX_STARTUP_TIMEOUT):
        floor = "at least 0" if zero_allowed else "more than 0"
        raise ctx.error(
            where, f"must be {floor} and at most {MAX_STARTUP_TIMEOUT:.0f} seconds, "
            f"got {describe(value)}"
        )
    return float(value)


def _check_seconds(value: Any, where: str, ctx: Context) -> float:
    return _seconds(value, where, ctx, zero_allowed=False)


def _check_strings(value: Any, where: str, ctx: Context) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ctx.error(where, f"expected a list of strings, got {describe(value)}")
    items: list[str] = []
    for index, item in enumerate(value):
        text = _check_string(item, f"{where}[{index}]", ctx)
        if not text:
            raise ctx.error(f"{where}[{index}]", "must not be empty")
        items.append(text)
    return tuple(items)


def _known_signals() -> frozenset[str]:
    return frozenset(name for name in signal.Signals.__members__ if name.startswith("SIG"))


def _check_signal(value: Any, where: str, ctx: Context) -> str:
    text = _check_string(value, where, ctx)
    if text == "":
        return ""
    known = _known_signals()
    name = text if text.startswith("SIG") else f"SIG{text}"
    if name in known:
        return name
    upper = text.upper() if text.upper().startswith("SIG") else f"SIG{text.upper()}"
    if upper in known:
        raise ctx.error(where, f"signal names are upper case: write {upper}")
    raise ctx.error(where, f"unknown signal {shown(text)}; use a name such as SIGHUP or HUP")


def _check_cmd_args(value: Any, where: str, ctx: Context) -> str:
    text = _check_string(value, where, ctx)
    try:
        split_cmd_args(text)
    except ValueError as exc:
        raise ctx.error(where, str(exc)) from None
    return text


def _check_delay(value: Any, where: str, ctx: Context) -> float:
    """Seconds, 0 allowed."""
    return _seconds(value, where, ctx, zero_allowed=True)


def _check_command(value: Any, where: str, ctx: Context) -> tuple[str, ...]:
    """A command line: a string split like cmd_args, or a list of strings (an argv)."""
    if isinstance(value, str):
        argv = split_cmd_args(_check_cmd_args(value, where, ctx))
    elif isinstance(value, list | tuple):
        argv = [_check_string(item, f"{where}[{index}]", ctx) for index, item in enumerate(value)]
    else:
        raise ctx.error(where, f"expected a string or a list of strings, got {describe(value)}")
    if argv and not argv[0]:
        raise ctx.error(where, "the program (first word) must not be empty")
    return tuple(argv)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_env(value: Any, where: str, ctx: Context) -> tuple[tuple[str, str], ...]:
    """NAME = "value" pairs: one block or map, or repeated blocks (merged, later wins)."""
    if isinstance(value, Mapping):
        blocks: list[Any] = [value]
    elif isinstance(value, list | tuple) and all(isinstance(b, Mapping) for b in value):
        blocks = list(value)
    else:
        raise ctx.error(where, f'expected a block of NAME = "value" pairs, got {describe(value)}')
    merged: dict[str, str] = {}
    for block in blocks:
        for name, item in block.items():
            if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
                raise ctx.error(f"{where}.{key_text(name)}", "is not an environment variable "
                                "name (letters, digits and _, not starting with a digit)")
            merged[name] = _check_string(item, f"{where}.{name}", ctx)
    return tuple(merged.items())


def _check_http_path(value: Any, where: str, ctx: Context) -> str | UseDefault:
    text = _check_string(value, where, ctx)
    if text == "":
        return USE_DEFAULT
    if not text.startswith("/"):
        raise ctx.error(where, f"must start with '/', got {shown(text)}")
    return text


def _check_ip_address(value: Any, where: str, ctx: Context) -> str:
    text = _check_string(value, where, ctx)
    if text == "":
        return ""
    literal = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(literal))
    except ValueError:
        raise ctx.error(where, f"expected an IPv4 or IPv6 address such as 127.0.0.1 or ::1, "
                               f"got {shown(text)}") from None


def check_choice(value: Any, choices: Sequence[str], where: str, ctx: Context) -> str:
    text = _check_string(value, where, ctx)
    if text in choices:
        return text
    if text.lower() in choices:
        raise ctx.error(where, f"write {text.lower()} in lower case")
    raise ctx.error(where, f"expected one of {', '.join(choices)}, got {shown(text)}")


def _check_owner(value: Any, where: str, ctx: Context, what: str,
                 resolve: Callable[[str], int]) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    else:
        text = _check_string(value, where, ctx).strip()
    if text == "":
        return ""
    if text.startswith("-"):
        raise ctx.error(where, f"{what} id must not be negative, got {shown(text)}")
    try:
        ident = resolve(text)
    except KeyError:
        raise ctx.error(where, f"unknown {what} {shown(text)}") from None
    if ident >= 2**32 - 1:
        raise ctx.error(where, f"{what} id {ident} is out of range")
    return Account(text, ident)


def _check_user(value: Any, where: str, ctx: Context) -> str:
    return _check_owner(value, where, ctx, "user", ctx.user_id)


def _check_group(value: Any, where: str, ctx: Context) -> str:
    return _check_owner(value, where, ctx, "group", ctx.group_id)


CHECKERS: dict[str, Callable[[Any, str, Context], Any]] = {
    "string": _check_string,
    "bool": _check_bool,
    "mode": _check_mode,
    "port": _check_port,
    "seconds": _check_seconds,
    "strings": _check_strings,
    "signal": _check_signal,
    "cmd_args": _check_cmd_args,
    "http_path": _check_http_path,
    "ip_address": _check_ip_address,
    "delay": _check_delay,
    "command": _check_command,
    "env": _check_env,
    "user": _check_user,
    "group": _check_group,
}


# --- how values are named in errors -------------------------------------------------------


def has_control_characters(text: str) -> bool:
    return any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in text)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def key_text(name: Any) -> str:
    """A key as it is named in an error: plain names as they are, others quoted."""
    if isinstance(name, str) and _PLAIN_KEY.fullmatch(name):
        return name
    return shown(name)


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def describe(value: Any) -> str:
    """'a string "x"', 'an integer 5', ... for type errors."""
    if isinstance(value, bool):
        return f"a boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        in_range = -INT64_LIMIT <= value < INT64_LIMIT
        return f"an integer {value}" if in_range else "an integer out of range"
    if isinstance(value, float):
        return f"a number {value}"
    if isinstance(value, str):
        return f"a string {shown(value)}"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a block"
    return f"a value of type {type(value).__name__}"


def one_line(text: str) -> str:
    return " ".join(text.split())
