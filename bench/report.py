"""Figure results and the table printed at the end. No I/O besides returning text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PASS = "pass"
MISS = "miss"
NA = "n/a"
ERROR = "error"


@dataclass
class Row:
    """One line of the table: a figure, what was measured, its target and the verdict."""

    figure: str
    measured: str
    target: str
    status: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"figure": self.figure, "measured": self.measured, "target": self.target,
                "status": self.status, **self.data}


def verdict(ok: bool) -> str:
    return PASS if ok else MISS


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| figure | measured | target | pass/miss |", "|---|---|---|---|"]
    lines += [f"| {r.figure} | {r.measured} | {r.target} | {r.status} |" for r in rows]
    return "\n".join(lines)


def json_report(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    return json.dumps({**meta, "figures": [r.as_dict() for r in rows]}, indent=2)


def ms(seconds: float) -> str:
    """Milliseconds with a precision that fits the size."""
    value = seconds * 1000
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"
