"""Reloading processes the helper did not start: ``pid_file_name`` and ``reload_cmd``.

* ``signal_pid_file``: read the pid file afresh each time and send ``renew_signal``; a
  missing, unreadable or stale file (the daemon is restarting and has not written its new
  pid yet) is retried briefly: 10 tries, 0.1 s doubling to 1 s between them (about 6.5 s).
* ``run_reload_cmd``: run a command (``mariadb-admin flush-ssl``, ``psql -c "SELECT
  pg_reload_conf()"``) bounded by a timeout, its process group killed after it; a failure
  is logged with its exit status and the tail of its stderr, and reported as False.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping, Sequence

from helper.child import Process, describe_exit, exit_code, parse_pid, signal_group
from helper.reaper import Reaper

log = logging.getLogger("spiffe_helper")

PID_FILE_TRIES = 10
PID_FILE_FIRST_DELAY = 0.1
PID_FILE_MAX_DELAY = 1.0
STDERR_TAIL_BYTES = 2048
KILL_WAIT = 5.0  # seconds to wait for a SIGKILLed process to be reaped
EOF_WAIT = 1.0  # seconds to wait for stderr to close once the command has exited


def read_pid_file(path: str) -> int:
    """The pid in `path`; FileNotFoundError or ValueError when there is none."""
    with open(path, "rb") as f:
        text = f.read(128).decode("ascii", errors="replace")
    pid = parse_pid(text)
    if pid == os.getpid():
        raise ValueError("it holds the helper's own pid")
    return pid


async def signal_pid_file(path: str, sig: signal.Signals, *, tries: int = PID_FILE_TRIES,
                          first_delay: float = PID_FILE_FIRST_DELAY) -> bool:
    delay = first_delay
    for attempt in range(1, tries + 1):
        pid = 0
        try:
            pid = read_pid_file(path)
            os.kill(pid, sig)
        except FileNotFoundError:
            problem = "it does not exist"
        except ValueError as exc:
            problem = str(exc)
        except ProcessLookupError:
            problem = f"process {pid} does not exist (stale pid file)"
        except PermissionError:
            log.error("pid file %s: not permitted to signal process %d", path, pid)
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
