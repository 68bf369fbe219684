"""Reading systemd unit files as systemd does, for the tests that re-create a unit's
sandbox without systemd: settings in order (a key may repeat; an empty assignment resets
a list), drop-ins applied after the unit, `SystemCallFilter=` groups expanded by
`systemd-analyze syscall-filter`."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

# keys whose assignments accumulate (an empty one resets); every other key: the last wins
LIST_KEYS = frozenset({"CapabilityBoundingSet", "AmbientCapabilities", "SystemCallFilter",
                       "RestrictAddressFamilies", "ReadWritePaths", "IPAddressAllow",
                       "IPAddressDeny", "SupplementaryGroups"})


def assignments(paths: Iterable[Path], section: str = "Service") -> list[tuple[str, str]]:
    """(key, value) of every assignment in `section`, in order: the unit, then drop-ins."""
    found: list[tuple[str, str]] = []
    for path in paths:
        current = ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                current = line[1:-1]
                continue
            if current == section and "=" in line:
                key, value = line.split("=", 1)
                found.append((key.strip(), value.strip()))
    return found


def setting(paths: Iterable[Path], key: str) -> list[str]:
    """The words of a list setting after every assignment, or [value] of a plain one
    ([] when unset)."""
    words: list[str] = []
    for name, value in assignments(paths):
        if name != key:
            continue
        if key not in LIST_KEYS:
            words = [value]
        elif not value:
            words = []
        else:
            words.extend(value.split())
    return words


def capabilities(paths: Iterable[Path], key: str = "CapabilityBoundingSet") -> list[str]:
    """The capabilities a list setting leaves (no `~` inversion is used in our units)."""
    caps: list[str] = []
    for name, value in assignments(paths):
        if name != key:
            continue
        if not value:
            caps = []
            continue
        assert not value.startswith("~"), f"{key}=~ is not supported here: {value}"
        caps.extend(word for word in value.split() if word not in caps)
    return caps


def expand_group(name: str, analyze: str | None = None) -> set[str]:
    """The system calls of `name` (a call, or an @group expanded recursively)."""
    if not name.startswith("@"):
        return {name}
    analyze = analyze or shutil.which("systemd-analyze") or "systemd-analyze"
    out = subprocess.run([analyze, "syscall-filter", name], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:  # the first line is the group's name
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        calls |= expand_group(word, analyze)
    return calls


def syscall_filter(paths: Iterable[Path]) -> tuple[bool, set[str]]:
    """(allow_list, calls) of `SystemCallFilter=` as systemd combines its assignments:
    the first one sets the mode (`~` makes a deny list); later ones add to the set, or
    take away from it when their `~` is the opposite of the mode."""
    allow_list: bool | None = None
    calls: set[str] = set()
    for name, value in assignments(paths):
        if name != "SystemCallFilter":
            continue
        if not value:
            allow_list, calls = None, set()
            continue
        negated = value.startswith("~")
        words = set()
        for word in value.lstrip("~").split():
            words |= expand_group(word)
        if allow_list is None:
            allow_list = not negated
        if negated == (not allow_list):
            calls |= words
        else:
            calls -= words
    return bool(allow_list), calls
