"""The one owner of ``waitpid``: reaps every child of the helper, known or orphaned.

On SIGCHLD it calls ``waitpid(-1, WNOHANG)`` until nothing is left, resolving the exit
future of each process it started and logging the orphans it adopted. Because it reaps
with -1, nothing else in the helper may wait for children: no ``subprocess``, no
``asyncio.create_subprocess_*`` (they would lose exit statuses to this loop). Children
are started with ``Reaper.spawn`` instead.

As PID 1 the kernel re-parents every orphan of the container to the helper. Not PID 1,
the helper marks itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``), so the
grandchildren of a daemon that double-forks are re-parented to it too, reaped, and
stopped with it (``stop_descendants``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence

from helper.supervise.child import Process, describe_exit, spawn

log = logging.getLogger("spiffe_helper")

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper(on: bool = True) -> bool:
    """Mark this process a child subreaper (Linux), or no longer one; False where that is
    not possible."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # only for a helper that supervises: not imported by one that does not

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        result = libc.prctl(ctypes.c_int(PR_SET_CHILD_SUBREAPER), ctypes.c_ulong(int(on)),
                            ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    except (OSError, AttributeError) as exc:
        log.warning("cannot become a child subreaper: %s", exc)
        return False
    if result != 0:
        log.warning("cannot become a child subreaper: %s", os.strerror(ctypes.get_errno()))
        return False
    return True


class Reaper:
    def __init__(self) -> None:
        self._waiting: dict[int, asyncio.Future[int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.orphans_reaped = 0
        self.subreaper = False

    @property
    def started(self) -> bool:
        return self._loop is not None

    def start(self) -> None:
        """Install the SIGCHLD handler (once, on the running loop) and reap what is there."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop.add_signal_handler(signal.SIGCHLD, self.reap)
        if os.getpid() == 1:
            log.info("running as PID 1: forwarding signals and reaping every orphan")
        else:
            self.subreaper = become_subreaper()
        self.reap()

    def close(self) -> None:
        if self._loop is None:
            return
        self.reap()
        self._loop.remove_signal_handler(signal.SIGCHLD)
        self._loop = None
        if self.subreaper:  # orphans from now on go to init, which reaps them
            become_subreaper(False)
            self.subreaper = False

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], *,
              inherit_stdin: bool = False, stderr_fd: int | None = None,
              death_signal: int | None = None) -> Process:
        """Start a child (see `helper.supervise.child.spawn`) whose exit this reaper reports."""
        self.start()
        assert self._loop is not None
        pid = spawn(argv, env, inherit_stdin=inherit_stdin, stderr_fd=stderr_fd,
                    death_signal=death_signal)
        # Registered before the loop runs again, so the reaper cannot miss this pid.
        future: asyncio.Future[int] = self._loop.create_future()
        self._waiting[pid] = future
        return Process(pid=pid, argv=tuple(argv), started=time.monotonic(), exit=future)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            future = self._waiting.pop(pid, None)
            if future is None:
                self.orphans_reaped += 1
                log.debug("reaped orphaned process %d (%s)", pid, describe_exit(status))
            elif not future.done():
                future.set_result(status)


def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    """(parent pid, state letter) from /proc/PID/stat; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()  # the name in parentheses may hold spaces
    try:
        return int(fields[1]), fields[0].decode("ascii", errors="replace")
    except (IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    found = _ppid_and_state(pid)
    return found is not None and found[1] not in ("Z", "X")


def descendants(root: int) -> list[int]:
    """The live descendants of `root`, from /proc/PID/stat alone.

    Not psutil: it needs /proc/stat (boot time) for every process it looks at, which
    systemd's ProcSubset=pid hides. Under ProtectProc=invisible /proc still lists the
    helper's own processes, i.e. its descendants unless they changed user.
    """
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    children: dict[int, list[int]] = {}
    for pid in pids:
        found = _ppid_and_state(pid)
        if found is not None and found[1] not in ("Z", "X"):
            children.setdefault(found[0], []).append(pid)
    result: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            result.append(child)
            todo.append(child)
    return result


def _send(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


async def stop_descendants(sig: signal.Signals, timeout: float) -> int:
    """Signal every remaining descendant of the helper with `sig`, SIGKILL those still
    there after `timeout` seconds; the number that were found.

    These are daemonized grandchildren re-parented to the helper (subreaper or PID 1),
    outside the child's process group.
    """
    found = descendants(os.getpid())
    procs = [pid for pid in found if _alive(pid)]
    if not procs:
        return 0
    log.info("stopping %d leftover descendant process(es): %s", len(procs),
             ", ".join(str(pid) for pid in procs))
    for pid in procs:
        _send(pid, sig)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while procs and loop.time() < deadline:
        await asyncio.sleep(0.05)
        procs = [pid for pid in procs if _alive(pid)]
    for pid in procs:
        log.warning("descendant process %d still running after %g s: killing it", pid, timeout)
        _send(pid, signal.SIGKILL)
    return len(found)
