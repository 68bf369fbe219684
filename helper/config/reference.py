"""The configuration as text for people, rendered from the key registry: the resolved
configuration (``check-config``) and the reference table of every key (the docs).

Only ``check-config`` and the documentation tools import this module, never a helper run.
Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from helper.config.keys import CONFIG_KEYS, Key, Kind
from helper.config.model import Config


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


# --- the reference table --------------------------------------------------------------------

def reference_table_markdown() -> str:
    """The configuration reference table (docs/configuration.md) of every key, nested keys
    included."""
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
