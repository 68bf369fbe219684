"""The error types that cross module boundaries.

Each carries enough to print one clear line; none carries key material.
"""

from __future__ import annotations


class HelperError(Exception):
    """Base class: an error the helper reports as one line, never a traceback."""


class ConfigError(HelperError):
    """A configuration problem. Printed as `FILE: KEY: PROBLEM`; the CLI exits 2."""

    def __init__(self, problem: str, *, file: str = "", key: str = "") -> None:
        self.problem = problem
        self.file = file
        self.key = key
        super().__init__(problem)

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.key) if p]
        return ": ".join([*parts, self.problem])


class AddressError(ConfigError):
    """A Workload API address that cannot be used."""


class Refused(HelperError):
    """A Workload API message that broke a validation rule; nothing was written.

    `rule` is the name of the broken rule (also the `rule` label of the refused-messages
    counter); `detail` says what was wrong in words that never include secret material.
    """

    def __init__(self, rule: str, detail: str) -> None:
        self.rule = rule
        self.detail = detail
        super().__init__(f"{rule}: {detail}")


class NotYetValid(Refused):
    """Refused only because a certificate is not valid yet; valid from `valid_from`
    (a datetime, the clock skew allowance already taken off)."""

    def __init__(self, rule: str, detail: str, valid_from: object) -> None:
        super().__init__(rule, detail)
        self.valid_from = valid_from


class WriteError(HelperError):
    """Writing an output file failed; the previous file is still in place.

    `errno` is the OS error behind it, when there was one (see `helper.outputs.preflight`).
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        self.errno = errno
        super().__init__(message)
