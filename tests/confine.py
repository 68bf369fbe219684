"""Running a command with what a systemd unit leaves it, without systemd as PID 1.

`Sandbox.command` wraps argv in: a private mount namespace (`unshare --mount`) where
/proc is mounted with the unit's `ProtectProc=`/`ProcSubset=` options and the Python
interpreter and the worktree are reachable for another user; `setpriv` with the user, the
capability bounding, inheritable and ambient sets and no-new-privileges; and
tests/sandbox.py, which loads the unit's seccomp filters and execs argv.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from unitfile import setting
from util import ROOT

CAP_NUMBERS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2,
               "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6,
               "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
               "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_PTRACE": 19,
               "CAP_SYS_ADMIN": 21, "CAP_SYS_RESOURCE": 24}


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing in CI")
        pytest.skip(f"SKIPPED LOUDLY: {name} is not installed")
    return found


def hidden_ancestors(paths: list[Path]) -> list[tuple[Path, str]]:
    """(directory, entry) pairs on the way to `paths` that other users cannot traverse
    (e.g. /root holding a pyenv Python): the confined processes get them through a
    private mount namespace, as a package's /usr/bin/python3 would need no help."""
    pairs: list[tuple[Path, str]] = []
    for path in paths:
        parts = path.resolve().parts
        for depth in range(1, len(parts) - 1):
            directory = Path(*parts[: depth + 1])
            if not os.stat(directory).st_mode & stat.S_IXOTH:
                pair = (directory, parts[depth + 1])
                if pair not in pairs:
                    pairs.append(pair)
    return pairs


@dataclass
class Sandbox:
    """Runs commands as another user with given capabilities, in a mount namespace
    where the Python interpreter and the worktree are reachable and /proc is mounted
    with the units' ProtectProc=/ProcSubset=."""

    world: Path

    def prelude(self, units: list[Path]) -> list[str]:
        script = ["set -e"]
        # ProtectProc= and ProcSubset=: a /proc instance with those mount options
        options = [f"hidepid={v}" for v in setting(units, "ProtectProc")]
        options += [f"subset={v}" for v in setting(units, "ProcSubset") if v != "all"]
        if options:
            script.append(f"mount -t proc -o {','.join(options)} proc /proc")
        pairs = hidden_ancestors([Path(sys.prefix), Path(sys.base_prefix),
                                  Path(sys.executable).parent, ROOT])
        for n, (directory, entry) in enumerate(pairs):
            stash = self.world / "stash" / str(n)
            stash.mkdir(parents=True, exist_ok=True)
            script += [f"mount --bind '{directory / entry}' '{stash}'",
                       f"mount -t tmpfs -o mode=0755 tmpfs '{directory}'",
                       f"mkdir -p '{directory / entry}'",
                       f"mount --bind '{stash}' '{directory / entry}'"]
        script.append('exec "$@"')
        return [tool("unshare"), "--mount", "--propagation", "private", "--",
                "sh", "-c", "\n".join(script), "sandbox"]

    def command(self, argv: list[str], *, user: str, group: str, caps: list[str],
                units: list[Path] | None = None) -> list[str]:
        names = ",".join(f"+{c.removeprefix('CAP_').lower()}" for c in caps)
        cap_spec = "-all" + (f",{names}" if names else "")
        setpriv = [tool("setpriv"), f"--reuid={user}", f"--regid={group}", "--init-groups",
                   f"--bounding-set={cap_spec}", f"--inh-caps={cap_spec}",
                   f"--ambient-caps={cap_spec}", "--no-new-privs", "--"]
        seccomp = [sys.executable, str(ROOT / "tests" / "sandbox.py"),
                   *(str(u) for u in units), "--"] if units else []
        # A measuring aid: SPIFFE_HELPER_STRACE=FILE records every system call the
        # confined command makes (strace -f), and those the filters refused, in FILE.
        trace = os.environ.get("SPIFFE_HELPER_STRACE")
        strace = [tool("strace"), "-f", "-qq", "-o", trace] if trace and units else []
        return [*self.prelude(units or []), *setpriv, *strace, *seccomp, *argv]


@contextlib.contextmanager
def world_dir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="spiffe-helper-least-privilege-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict((k, v.strip()) for k, v in (line.split(":", 1) for line in f))


def helper_pid(proc: subprocess.Popen[bytes]) -> int:
    """The helper's pid: the Popen's own (every wrapper execs) unless strace is between."""
    import psutil

    for candidate in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(True)]:
        if candidate.cmdline()[1:3] == ["-m", "helper"]:
            return int(candidate.pid)
    raise AssertionError("no helper process")


def cap_mask(caps: list[str]) -> int:
    return sum(1 << CAP_NUMBERS[c] for c in caps)
