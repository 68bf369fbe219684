"""Running the helper CLI beside a recording child: the shared plumbing of the supervisor tests.

The child is tests/children/recorder.py, which appends what happens to it (its start, the
files it saw, every signal) to a JSON-lines file that the tests read.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
from util import ROOT, Process, env_without, helper_cmd, wait_for
from util import serial_of as serial_of  # re-exported: the supervisor tests' one import
from util import write_conf as write_conf

RECORDER = ROOT / "tests" / "children" / "recorder.py"


def hcl(text: str) -> str:
    """`text` as an HCL string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cmd_lines(script: Path, *args: str) -> str:
    """cmd and cmd_args running `script` with this Python (paths here have no spaces)."""
    return f"cmd = {hcl(sys.executable)}\ncmd_args = {hcl(' '.join([str(script), *args]))}\n"


def recorder_cmd(record: Path, certs: Path, *args: str) -> str:
    """cmd and cmd_args lines that run the recorder, told where the SVID is."""
    return cmd_lines(RECORDER, "--record", str(record), "--cert", str(certs / "svid.pem"), *args)


def records(path: Path, event: str | None = None) -> list[dict[str, Any]]:
    """The complete JSON lines of a record file (a line being written is skipped)."""
    try:
        lines = path.read_text().splitlines(keepends=True)
    except FileNotFoundError:
        return []
    out = [json.loads(line) for line in lines if line.endswith("\n")]
    return [r for r in out if event is None or r["event"] == event]


def signals_of(path: Path, pid: int | None = None) -> list[str]:
    return [r["name"] for r in records(path, "signal") if pid is None or r["pid"] == pid]


def wait_records(path: Path, event: str, count: int = 1, timeout: float = 10.0,
                 ) -> list[dict[str, Any]]:
    return wait_for(lambda: len(records(path, event)) >= count and records(path, event),
                    timeout=timeout, what=f"{count} {event!r} record(s) in {path.name}")


def gone(pid: int) -> bool:
    """Gone, or a zombie (dead, waiting for whoever adopted it after the helper exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Run(Process):
    """The helper CLI under test, stopped on exit. `prefix` wraps it (unshare, env tweaks)."""

    def __init__(self, tmp_path: Path, conf: Path, *, prefix: Sequence[str] = (),
                 env: dict[str, str] | None = None, new_session: bool = False,
                 stdin: Any = subprocess.DEVNULL, args: Sequence[str] = ()) -> None:
        super().__init__([*prefix, *helper_cmd("-config", str(conf), *args)],
                         tmp_path / "helper.log", stdin=stdin, new_session=new_session,
                         env=env if env is not None else env_without("NOTIFY_SOCKET"),
                         stop_timeout=15.0)

    def log(self) -> str:
        return self.output()

    def wait_log(self, text: str, count: int = 1, timeout: float = 10.0) -> None:
        wait_for(lambda: self.log().count(text) >= count, timeout=timeout,
                 what=f"{count} x {text!r} in the helper's log")
