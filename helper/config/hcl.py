"""Reading config text into raw values: the Go spiffe-helper's ``helper.conf`` (HCL 1), or
the same keys in TOML. Pure: the text is given; ``load`` reads the file.

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
"""

from __future__ import annotations

import json
import re
import sys
import threading
from dataclasses import dataclass
from typing import Any

from hcl.lexer import Lexer
from hcl.parser import HclParser

from helper.config.checks import INT64_LIMIT, one_line, shown
from helper.config.hcl_tables import lr_parser
from helper.errors import ConfigError
from helper.workload.advice import toml_octal


def parse_toml(text: str, *, source: str = "") -> dict[str, Any]:
    """TOML text to a mapping; syntax errors become ConfigError."""
    # Imported here: HCL configs, the common case, do not pay for the TOML parser.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError is a ValueError
        hint = toml_octal(text, str(exc))
        raise ConfigError(f"TOML syntax error: {one_line(str(exc))}"
                          + (f"; {hint}" if hint else ""), file=source) from None
    return data


def parse_hcl(text: str, *, source: str = "") -> dict[str, Any]:
    """HCL 1 text to a mapping, reading integer literals as Go does."""
    is_json = _looks_like_json(text)
    go_text = text if is_json else _go_compatible_hcl(text, source)
    try:
        data = json.loads(go_text) if is_json else _hcl_parse(go_text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"line {exc.lineno}: JSON syntax error: {exc.msg}", file=source) from None
    except ValueError as exc:
        raise ConfigError(_hcl_problem(str(exc)), file=source) from None
    except Exception as exc:  # pyhcl/ply can fail in other ways on malformed input
        raise ConfigError(f"HCL syntax error: {one_line(str(exc))}", file=source) from None
    if not isinstance(data, dict):
        raise ConfigError("expected key = value pairs at the top level", file=source)
    return data


def _looks_like_json(text: str) -> bool:
    """HCL text whose first non-blank character is '{' is JSON (as pyhcl and Go decide)."""
    return text.lstrip()[:1] == "{"


class _GoLikeHclParser(HclParser):  # type: ignore[misc]
    """pyhcl's parser, with repeated keys read as Go's decoder reads them.

    pyhcl merges repeated top-level blocks key by key and loses keys when two blocks share
    one (``jwt_svids { ... }`` twice), and turns a key repeated inside a block into a list.
    Here the blocks and lists of a repeated key are concatenated into one list (Go appends
    each to the slice, or decodes each into the same struct), and a repeated scalar keeps
    its last value (Go decodes each in turn).
    """

    def __init__(self) -> None:
        # pyhcl would run PLY's LALR table generator here (~100 ms); use stored tables.
        self.yacc = lr_parser(self)

    def objectlist_flat(self, lt: list[tuple[Any, Any]], replace: bool) -> dict[Any, Any]:
        occurrences: dict[Any, list[Any]] = {}
        for key, value in lt:
            occurrences.setdefault(key, []).append(value)
        return {key: _merge_repeated(values) for key, values in occurrences.items()}


def _merge_repeated(values: list[Any]) -> Any:
    if len(values) == 1:
        return values[0]
    if all(isinstance(value, dict | list) for value in values):
        return [item for value in values for item in _as_list(value)]
    return values[-1]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


_PARSER_LOCK = threading.Lock()


_PARSER: list[Any] = []  # built once per process


def _hcl_parse(text: str) -> Any:
    with _PARSER_LOCK:
        if not _PARSER:
            _PARSER.append(_GoLikeHclParser())
        return _PARSER[0].parse(text)


_HCL_POSITION = re.compile(r"^Line (\d+), column \d+(?:, index \d+)?: (.*)$", re.DOTALL)


def _hcl_problem(message: str) -> str:
    """pyhcl's error message as 'line N: problem' (dropping its list of expected tokens)."""
    message = one_line(message)
    match = _HCL_POSITION.match(message)
    if match is None:
        problem = message.split("; expected", 1)[0]
        return f"HCL syntax error: {problem[:1].lower()}{problem[1:]}"
    problem = match.group(2).split("; expected", 1)[0]
    return f"line {match.group(1)}: HCL syntax error: {problem}"


# --- Go-compatible HCL literals --------------------------------------------------------------

_GO_INT = re.compile(r"-?(?:0[xX][0-9a-fA-F]+|[0-9]+)")


def _go_compatible_hcl(text: str, source: str) -> str:
    """Check string literals and rewrite octal-form integers to decimal, as Go reads them."""
    edits: list[tuple[int, int, str]] = []
    tokens = _hcl_tokens(text, source)
    keys = _KeyTracker()
    for index, (token, string_start) in enumerate(tokens):
        following = tokens[index + 1][0].type if index + 1 < len(tokens) else ""
        keys.feed(token, following)
        if token.type == "NUMBER":
            edit = _octal_rewrite(text, token, source, keys.key)
            if edit is not None:
                edits.append(edit)
        elif token.type == "STRING" and string_start is not None:
            raw = text[string_start : token.lexpos]
            _check_quoted_string(raw, token.value, f"line {token.lineno}", source, keys.key)
    for start, end, replacement in reversed(edits):
        text = text[:start] + replacement + text[end:]
    return text


def _hcl_tokens(text: str, source: str) -> list[tuple[Any, int | None]]:
    """pyhcl's tokens; quoted STRING tokens come with the offset where their text starts."""
    lexer = Lexer()
    lexer.input(text)
    tokens: list[tuple[Any, int | None]] = []
    while True:
        try:
            token = lexer.token()
        except ValueError as exc:
            raise ConfigError(_hcl_problem(str(exc)), file=source) from None
        if token is None:
            return tokens
        tokens.append((token, _quoted_string_start(lexer.lex, token)))


def _quoted_string_start(lex: Any, token: Any) -> int | None:
    """Where a quoted string's text starts, or None for other tokens and heredocs.

    pyhcl's lexer records the start of the latest quoted string (abs_start) and of the
    latest heredoc (here_start); whichever is later produced this STRING token.
    """
    if token.type != "STRING":
        return None
    string_start: int = getattr(lex, "abs_start", -1)
    heredoc_start: int = getattr(lex, "here_start", -1)
    if string_start < 0 or heredoc_start > string_start:
        return None
    return string_start


@dataclass
class _Container:
    path: str
    is_list: bool
    items: int = 0


class _KeyTracker:
    """Follows the key each token belongs to, so that literal errors can name it.

    Keys are named as validation names them: ``health_checks.bind_port``,
    ``jwt_svids[1].jwt_audience``.
    """

    def __init__(self) -> None:
        self.containers: list[_Container] = []
        self.key = ""

    def feed(self, token: Any, following: str) -> None:
        kind = token.type
        if kind in ("IDENTIFIER", "STRING") and following in ("EQUAL", "LEFTBRACE"):
            parent = self.containers[-1].path if self.containers else ""
            self.key = f"{parent}.{token.value}" if parent else str(token.value)
        elif kind in ("LEFTBRACE", "LEFTBRACKET"):
            self.containers.append(_Container(self._element_path(), kind == "LEFTBRACKET"))
        elif kind in ("RIGHTBRACE", "RIGHTBRACKET") and self.containers:
            self.containers.pop()
            if self.containers and not self.containers[-1].is_list:
                self.key = self.containers[-1].path

    def _element_path(self) -> str:
        if self.containers and self.containers[-1].is_list:
            container = self.containers[-1]
            container.items += 1
            return f"{container.path}[{container.items - 1}]"
        return self.key


def _octal_rewrite(text: str, token: Any, source: str, key: str) -> tuple[int, int, str] | None:
    """The edit that turns a Go octal literal into decimal, if the NUMBER ``token`` is one."""
    line = token.lineno
    match = _GO_INT.match(text, token.lexpos)
    if match is None:
        return None
    raw = match.group(0)
    if text[match.end() : match.end() + 1] in ("e", "E"):
        return None  # mantissa of a float such as 010e2: Go reads it as decimal too
    digits = raw.lstrip("-")
    if digits[:2] in ("0x", "0X") or len(digits) < 2 or digits[0] != "0":
        return None
    if any(ch in "89" for ch in digits):
        raise ConfigError(f"line {line}: illegal octal number {raw}", file=source, key=key)
    value = int(digits, 8)
    if value >= INT64_LIMIT:
        raise ConfigError(f"line {line}: integer {shown(raw)} is out of range",
                          file=source, key=key)
    return match.start(), match.end(), str(-value if raw.startswith("-") else value)


def _check_quoted_string(raw: str, pyhcl_value: str, line: str, source: str, key: str) -> None:
    """Refuse a quoted string that Go would reject or read differently from pyhcl."""
    chars: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\n":
            raise ConfigError(f"{line}: line break inside a quoted string", file=source, key=key)
        if ch == "\\":
            following = raw[i + 1 : i + 2]
            if following not in ('"', "\\"):
                raise ConfigError(
                    f"{line}: escape sequence \\{following} is not supported in strings "
                    '(only \\" and \\\\ are)',
                    file=source, key=key,
                )
            chars.append(following)
            i += 2
            continue
        if ch == '"':
            break
        chars.append(ch)
        i += 1
    if i < len(raw) or "".join(chars) != pyhcl_value:
        raise ConfigError(
            f"{line}: a string with a backslash before a backslash or quote "
            "cannot be read reliably; avoid \\\\ next to \\ or \"",
            file=source, key=key,
        )
