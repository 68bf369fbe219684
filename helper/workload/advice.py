"""What to tell an operator to do, for errors whose raw text does not say it (pure, no I/O).

Each function takes the facts (gathered by the caller) and returns one line.
"""

from __future__ import annotations

import re

from helper.workload.address import Address

ADDRESS_SETTINGS = ("the agent_address key of the config, or the SPIFFE_ENDPOINT_SOCKET "
                    "environment variable when agent_address is not set")


def no_agent(address: Address, exists: bool | None, *, permission_denied: bool = False) -> str:
    """No Workload API answers at `address`; `exists`: does its socket path exist (None
    for TCP)."""
    if address.scheme == "tcp":
        return (f"no Workload API answers at {address}: is the agent running and listening "
                f"there? The address comes from {ADDRESS_SETTINGS}")
    path = address.path
    if permission_denied:
        return (f"no access to the Workload API socket {path}: the socket exists but this "
                f"user may not connect to it; run the helper as a user the agent's socket "
                f"directory and socket allow")
    if not exists:
        return (f"no Workload API at {address}: the socket {path} does not exist; start the "
                f"SPIRE agent, or point the helper at its socket with {ADDRESS_SETTINGS}")
    return (f"no Workload API at {address}: {path} exists but nothing accepts connections "
            f"on it (the agent stopped, or the socket is stale); start the agent, or point "
            f"the helper at the right socket with {ADDRESS_SETTINGS}")


_LINE_COLUMN = re.compile(r"\(at line (\d+), column \d+\)")
_OCTAL_LITERAL = re.compile(r"^\s*([A-Za-z0-9_.\"'-]+)\s*=\s*(0[0-7]+)\s*(#.*)?$")


def toml_octal(text: str, error: str) -> str | None:
    """A TOML syntax error on a line like `key_file_mode = 0600` (TOML integers have no
    leading zeros): how to write the mode instead; None for other errors."""
    match = _LINE_COLUMN.search(error)
    if match is None:
        return None
    lines = text.splitlines()
    number = int(match.group(1))
    if not 1 <= number <= len(lines):
        return None
    literal = _OCTAL_LITERAL.match(lines[number - 1])
    if literal is None:
        return None
    key, value = literal.group(1), literal.group(2)
    digits = value.lstrip("0") or "0"
    return (f"TOML has no octal literals with a leading 0: write {key} = \"{value}\" "
            f"or {key} = 0o{digits}")


def mode_example(source: str) -> str:
    """How to write a file mode in the syntax of config `source`."""
    if source.lower().endswith(".toml"):
        return 'as an octal string such as "0644", or as 0o644'
    return "in octal with a leading 0, such as 0644"
