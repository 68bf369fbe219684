"""Reloading processes the helper did not start: ``pid_file_name`` and ``reload_cmd``.

* ``signal_pid_file``: read the pid file afresh each time and send ``renew_signal``; a
  missing, unreadable or stale file (the daemon is restarting and has not written its new
  pid yet) is retried briefly: 10 tries, 0.1 s doubling to 1 s between them (about 6.5 s).
  The file is read off the event loop and never waited on (a FIFO there is refused), and
  it is not trusted blindly: pid 1, the helper, its process group and numbers out of
  range are refused; a root helper signals a process named by a file (or symlink, or
  directory) of another user only if that process runs as that user (systemd's rule for
  PIDFile=); the process is pinned with ``pidfd_open`` before it is checked and signalled,
  so a recycled pid is never signalled. Nothing the file holds is ever logged.
* ``run_reload_cmd``: run a command (``mariadb-admin flush-ssl``, ``psql -c "SELECT
  pg_reload_conf()"``) bounded by a timeout, its process group killed after it; a failure
  is logged with its exit status and the tail of its stderr, and reported as False.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from helper.safefile import UnreadableFile, read_small_file
from helper.supervise.child import Process, describe_exit, exit_code, parse_pid, signal_group
from helper.supervise.reaper import Reaper

log = logging.getLogger("spiffe_helper")

PID_FILE_TRIES = 10
PID_FILE_FIRST_DELAY = 0.1
PID_FILE_MAX_DELAY = 1.0
STDERR_TAIL_BYTES = 2048
KILL_WAIT = 5.0  # seconds to wait for a SIGKILLed process to be reaped
EOF_WAIT = 1.0  # seconds to wait for stderr to close once the command has exited
MAX_PID_FILE_BYTES = 4096  # PostgreSQL's postmaster.pid is a few lines
PID_MAX_FALLBACK = 1 << 22
PID_LIMIT = (1 << 31) - 1  # pid_t
PIDFD_AVAILABLE = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")


class Refusal(ValueError):
    """The pid file names a process the helper will not signal (not retried)."""


@dataclass(frozen=True)
class PidFile:
    pid: int
    owner: int | None  # the uid the process must run as; None: any process


def pid_max() -> int:
    """The largest pid the kernel hands out (Linux's pid_max; 2^22 where unknown)."""
    try:
        with open("/proc/sys/kernel/pid_max", "rb") as f:
            return int(f.read(32).strip() or PID_MAX_FALLBACK)
    except (OSError, ValueError):
        return PID_MAX_FALLBACK


def check_pid(pid: int) -> int:
    """`pid` when it may be signalled; Refusal for init, the helper itself, its process
    group, and numbers no process can have."""
    if pid > min(pid_max(), PID_LIMIT):
        raise Refusal("the pid in it is out of range")
    if pid <= 1:
        raise Refusal("it names init (pid 1)" if pid == 1 else "it names no single process")
    if pid == os.getpid():
        raise Refusal("it holds the helper's own pid")
    if pid == os.getpgrp():
        raise Refusal("it holds the helper's own process group")
    return pid


CAP_KILL = 5  # linux/capability.h


def can_signal_others() -> bool:
    """Whether this process may signal processes of other users: root, or CAP_KILL in its
    effective set (a dedicated user with an ambient CAP_KILL, as systemd/spiffe-helper.service
    runs it)."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_KILL & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def required_owner(path: str, st: os.stat_result) -> int | None:
    """Following systemd's rule for PIDFile=: a helper that may signal other users' processes
    (root, or CAP_KILL) trusts a pid file only as far as whoever could have written it. The
    file, a symlink at its path and the directories holding them are looked at; if any
    belongs to a user other than root and the helper's own, only processes of that user may
    be signalled (None: any process the helper may signal). Refusal when several users
    share them."""
    if not can_signal_others():
        return None
    uids = {st.st_uid}
    try:
        link = os.lstat(path)
        uids.add(link.st_uid)
        uids.add(os.stat(os.path.dirname(os.path.abspath(path))).st_uid)
        if stat.S_ISLNK(link.st_mode):
            uids.add(os.stat(os.path.dirname(os.path.realpath(path))).st_uid)
    except OSError as exc:
        raise Refusal(f"cannot check who owns it: {exc.strerror or exc}") from None
    others = sorted(uids - {0, os.geteuid()})
    if len(others) > 1:
        raise Refusal(f"it and its directories belong to several users (uids "
                      f"{', '.join(map(str, others))})")
    return others[0] if others else None


def load_pid_file(path: str) -> PidFile:
    """The pid in `path` and whose processes it may name. FileNotFoundError, ValueError
    (no pid yet: retried) or Refusal (never retried). Nothing of the file's contents goes
    into a message. Blocking-free (O_NONBLOCK), but run it off the event loop."""
    try:
        file = read_small_file(path, MAX_PID_FILE_BYTES)
    except UnreadableFile as exc:
        raise Refusal(f"it is {exc}" if str(exc).startswith("larger") else str(exc)) from None
    text = file.data.decode("ascii", errors="replace")
    pid = check_pid(parse_pid(text))
    return PidFile(pid, required_owner(path, file.stat))


def read_pid_file(path: str) -> int:
    """The pid in `path`; FileNotFoundError or ValueError when there is none."""
    return load_pid_file(path).pid


def check_owner(pid: int, owner: int) -> None:
    """Refusal unless process `pid` runs as `owner` (real and effective uid). Where /proc
    hides another user's process details (ProtectProc=noaccess, hidepid=1), the owner of
    its /proc directory (its effective uid) is what can be checked."""
    import psutil  # daemon-only: not on the one-shot path

    try:
        uids = psutil.Process(pid).uids()
        real, effective = uids.real, uids.effective
    except psutil.NoSuchProcess:
        raise ProcessLookupError(pid) from None
    except psutil.AccessDenied:
        try:
            real = effective = os.stat(f"/proc/{pid}").st_uid
        except FileNotFoundError:
            raise Refusal(f"cannot check who owns process {pid}: /proc hides it "
                          f"(ProtectProc=invisible? use noaccess)") from None
        except OSError as exc:
            raise Refusal(f"cannot check who owns process {pid}: {exc.strerror}") from None
    except psutil.Error as exc:
        raise Refusal(f"cannot check who owns process {pid}: {exc}") from None
    if real != owner or effective != owner:
        raise Refusal(f"process {pid} is not owned by uid {owner}, who owns the pid file")


def send_to_pid_file(path: str, sig: signal.Signals) -> int:
    """Read `path` and signal the process it names; its pid. With pidfd_open the process
    is pinned before it is checked, so a pid recycled meanwhile is never signalled (the
    signal then fails with ProcessLookupError)."""
    target = load_pid_file(path)
    pid = target.pid
    if PIDFD_AVAILABLE:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM):  # ESRCH: no such process
                raise
        else:
            try:
                if target.owner is not None:
                    check_owner(pid, target.owner)
                signal.pidfd_send_signal(pidfd, sig)
            finally:
                os.close(pidfd)
            return pid
    if target.owner is not None:
        check_owner(pid, target.owner)
    os.kill(pid, sig)
    return pid


async def signal_pid_file(path: str, sig: signal.Signals, *, tries: int = PID_FILE_TRIES,
                          first_delay: float = PID_FILE_FIRST_DELAY) -> bool:
    """Send `sig` to the process `path` names, retrying while the file is missing, empty
    or stale; every failure is one line in the log, and False."""
    delay = first_delay
    for attempt in range(1, tries + 1):
        pid = 0
        try:
            pid = await asyncio.to_thread(send_to_pid_file, path, sig)
        except FileNotFoundError:
            problem = "it does not exist"
        except Refusal as exc:
            log.warning("pid file %s: %s; not signalled", path, exc)
            return False
        except ValueError as exc:
            problem = str(exc)
        except ProcessLookupError:
            problem = "the process it names does not exist (stale pid file)"
        except PermissionError:
            log.error("pid file %s: not permitted to signal the process it names", path)
            return False
        except OSError as exc:
            problem = exc.strerror or str(exc)
        else:
            log.info("renewal: sent %s to process %d (pid file %s)", sig.name, pid, path)
            return True
        if attempt == tries:
            log.error("pid file %s: %s; gave up after %d tries", path, problem, tries)
            return False
        log.warning("pid file %s: %s; retrying in %g s (try %d of %d)", path, problem, delay,
                    attempt, tries)
        await asyncio.sleep(delay)
        delay = min(delay * 2, PID_FILE_MAX_DELAY)
    return False


class StderrTail:
    """Reads a pipe on the event loop, keeping only its last `limit` bytes."""

    def __init__(self, fd: int, limit: int = STDERR_TAIL_BYTES) -> None:
        self.fd = fd
        self.limit = limit
        self.data = bytearray()
        self.eof = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._closed = False
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._loop.remove_reader(self.fd)
            self.eof.set()
            return
        self.data += chunk
        del self.data[: -self.limit]

    async def wait_eof(self, timeout: float) -> None:
        # on timeout, a process it started still holds the pipe open
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.eof.wait(), timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self.fd)
        os.close(self.fd)

    def text(self) -> str:
        """The tail as one line: lines joined with ' | '."""
        lines = bytes(self.data).decode("utf-8", errors="replace").splitlines()
        return " | ".join(line.strip() for line in lines if line.strip())


async def wait_exit(proc: Process, timeout: float) -> int | None:
    """The wait status of `proc`, or None if it is still running after `timeout` seconds."""
    try:
        return await asyncio.wait_for(asyncio.shield(proc.exit), max(0.0, timeout))
    except asyncio.TimeoutError:
        return None


async def run_reload_cmd(reaper: Reaper, argv: Sequence[str], env: Mapping[str, str],
                         timeout: float) -> bool:
    """Run `argv` to completion (at most `timeout` seconds); True when it exited 0."""
    read_fd, write_fd = os.pipe()
    try:
        proc = reaper.spawn(argv, env, stderr_fd=write_fd)
    except OSError as exc:
        os.close(read_fd)
        log.error("reload_cmd %s cannot be started: %s", argv[0], exc.strerror or exc)
        return False
    finally:
        os.close(write_fd)
    tail = StderrTail(read_fd)
    timed_out = False
    try:
        status = await wait_exit(proc, timeout)
        if status is None:
            timed_out = True
            signal_group(proc.pgid, signal.SIGKILL)
            status = await wait_exit(proc, KILL_WAIT)
        await tail.wait_eof(EOF_WAIT)
    finally:
        if proc.alive:  # cancelled (the helper is stopping), or SIGKILL did not work
            signal_group(proc.pgid, signal.SIGKILL)
        tail.close()
    stderr = tail.text()
    if status is not None and not timed_out and exit_code(status) == 0:
        log.info("reload_cmd %s succeeded", argv[0])
        if stderr:
            log.debug("reload_cmd stderr: %s", stderr)
        return True
    if timed_out:
        outcome = f"timed out after {timeout:g} s and was killed"
    else:
        outcome = describe_exit(status) if status is not None else "did not exit after SIGKILL"
    log.error("reload_cmd %s failed: %s%s", argv[0], outcome,
              f"; stderr: {stderr}" if stderr else "; no stderr output")
    return False
