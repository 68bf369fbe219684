"""The process supervisor: runs ``cmd`` next to the helper and keeps it on fresh files.

A feature (helper.features) at these phases of the core (helper/app.py):

* ``ready`` (every file written once): start ``cmd`` (``cmd_args`` split as Go does);
* ``changed`` (each later write that changed files): one coalesced reload
  (helper/supervise/reload_runner.py), per ``renew_action``: ``"signal"`` sends
  ``renew_signal`` to the running child, or starts it again when it has exited (Go's
  "reload command" pattern);
  ``"restart"`` stops it (``stop_signal``, ``stop_timeout``, then SIGKILL of its process
  group) and starts it on the new files. Then the ``pid_file_name`` process is signalled
  and ``reload_cmd`` runs (helper/supervise/external.py);
* the child exits on its own (``serve``): per ``on_cmd_exit``, ``"renew"`` waits for the next
  renewal, ``"exit"`` ends the helper with the child's status (exit N -> N, signal S ->
  128 + S), ``"restart"`` starts it again after a backoff (helper/supervise/restart_policy.py) and
  gives up after 10 crashes in 5 minutes, ending the helper with the last child's status
  (or 1 when that was 0);
* SIGTERM/SIGINT (``signal``): forwarded to the child, which gets ``stop_timeout``
  seconds before its group is SIGKILLed; the helper then exits, with the child's status
  when ``on_cmd_exit = "exit"``, else 0. SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH and SIGHUP are
  forwarded and the helper carries on;
* ``shutdown``: the child is stopped with ``stop_signal``, then every remaining descendant
  (daemonized grandchildren re-parented to the helper) is stopped too.

A child that cannot be started counts as one that exited 127 (not found) or 126 (not
executable). Signal handlers only enqueue (helper/supervise/signals.py); everything here runs on
the event loop, and one lock serialises starting, stopping and signalling the child.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from signal import Signals

from helper.config import Config
from helper.features import Feature
from helper.identity.snapshot import X509Snapshot
from helper.ops.status import Status
from helper.supervise.child import (
    Process,
    child_environment,
    describe_exit,
    exit_code,
    group_exists,
    send_signal,
    signal_group,
)
from helper.supervise.cmdargs import split_cmd_args
from helper.supervise.external import KILL_WAIT, run_reload_cmd, signal_pid_file, wait_exit
from helper.supervise.reaper import Reaper, stop_descendants
from helper.supervise.reload_runner import ReloadRunner
from helper.supervise.restart_policy import RestartPolicy
from helper.supervise.signals import STOP_SIGNALS

log = logging.getLogger("spiffe_helper")

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1,
                     signal.SIGUSR2, signal.SIGWINCH, signal.SIGHUP)
EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXECUTE = 126
# what a reload covers
CHILD = "child"
EXTERNAL = "external"  # pid_file_name and reload_cmd


@dataclass(frozen=True)
class ChildExit:
    code: int  # shell convention
    description: str  # "exited 3", "killed by SIGSEGV", "failed to start (...)"
    started: float  # monotonic
    ended: float


def wanted(cfg: Config) -> bool:
    """Whether a config needs the supervisor (a container's PID 1 always reaps)."""
    if not cfg.daemon_mode:
        return False
    return bool(cfg.cmd or cfg.pid_file_name or cfg.reload_cmd) or os.getpid() == 1


def create(cfg: Config, status: Status, child_env: dict[str, str], *,
           policy: RestartPolicy | None = None) -> Supervisor | None:
    """The supervisor when `cfg` needs one. `child_env` is added to the environment of
    every process it starts (cmd, reload_cmd)."""
    if not wanted(cfg):
        return None
    return Supervisor(cfg, status, child_env, policy=policy)


class Supervisor(Feature):
    def __init__(self, cfg: Config, status: Status, child_env: dict[str, str], *,
                 policy: RestartPolicy | None = None, reaper: Reaper | None = None) -> None:
        self.cfg = cfg
        self.status = status
        self.child_env = child_env
        # the signals forwarded to cmd (SIGTERM and SIGINT stop it)
        self.signals = frozenset(FORWARDED_SIGNALS) if cfg.cmd else frozenset()
        self.policy = policy if policy is not None else RestartPolicy()
        self.reaper = reaper if reaper is not None else Reaper()
        self.reloader = ReloadRunner(self._reload, self.cfg.reload_debounce)
        self.is_ready = False  # the `ready` phase has run
        self.child: Process | None = None
        self.starts = 0
        self.stopping = False
        self._lock = asyncio.Lock()
        self._exits: asyncio.Queue[ChildExit] = asyncio.Queue()
        self._first_write_changed = False
        self._atexit_registered = False
        self._rerun_on_exit = False  # files changed while cmd ran and it was not told

    # ----- phases -----

    async def written(self, pipeline: str, snapshot: X509Snapshot,
                      changed: Sequence[Path]) -> None:
        if not self.is_ready:
            self._first_write_changed = bool(changed)

    async def ready(self) -> None:
        self.is_ready = True
        self.reaper.start()
        if self.cfg.cmd:
            async with self._lock:
                if not self.stopping:
                    self._start()
        # The process behind pid_file_name or reload_cmd may hold older files (Go signals
        # it after the first write too); nothing to do when the files were already there.
        if self._first_write_changed and self._external_parts():
            self.reloader.trigger({EXTERNAL})

    async def changed(self, pipeline: str, snapshot: X509Snapshot,
                      changed: Sequence[Path]) -> None:
        parts = self._external_parts() | ({CHILD} if self.cfg.cmd else set())
        self.reloader.trigger(parts)

    async def serve(self) -> int | None:
        """Watch the child's exits and apply on_cmd_exit; an int ends the helper."""
        self.reaper.start()
        if not self.cfg.cmd:
            return None
        while True:
            ended = await self._exits.get()
            if self.stopping:
                continue
            if self.cfg.on_cmd_exit == "exit":
                log.info('cmd %s: the helper exits with %d (on_cmd_exit = "exit")',
                         ended.description, ended.code)
                return ended.code
            if self.cfg.on_cmd_exit == "renew":
                if self._rerun_on_exit:
                    log.info("cmd %s; the files changed while it ran: starting it again",
                             ended.description)
                    async with self._lock:
                        if not self.stopping and (self.child is None or not self.child.alive):
                            self._start()
                    continue
                log.info('cmd %s; it starts again at the next renewal (on_cmd_exit = "renew")',
                         ended.description)
                continue
            delay = self.policy.after_exit(started=ended.started, ended=ended.ended)
            if delay is None:
                code = ended.code or 1
                self.status.child_state = f"gave up: {ended.description}"
                log.error("cmd %s, its %d exit within %g s: giving up; the helper exits "
                          "with %d", ended.description, self.policy.recent_crashes,
                          self.policy.window, code)
                return code
            self.status.child_state = "restarting"
            log.warning("cmd %s: starting it again in %g s", ended.description, delay)
            await asyncio.sleep(delay)
            async with self._lock:
                if not self.stopping and (self.child is None or not self.child.alive):
                    self._start()

    async def signal(self, sig: Signals) -> int | None:
        if sig in STOP_SIGNALS:
            return await self._terminate(sig)
        child = self.child
        if child is None or not child.alive or self.stopping:
            log.info("received %s: cmd is not running, nothing to forward", sig.name)
            return None
        send_signal(child.pid, sig)
        level = logging.DEBUG if sig == signal.SIGWINCH else logging.INFO
        log.log(level, "forwarded %s to cmd (pid %d)", sig.name, child.pid)
        return None

    async def shutdown(self, code: int) -> int:
        """Stop everything the supervisor started; the exit code is left as it is."""
        self.stopping = True
        await self.reloader.close()
        async with self._lock:
            child = self.child
            if child is not None and child.alive:
                await self._stop(child, self._stop_signal)
        if self.reaper.started:
            await stop_descendants(self._stop_signal, self.cfg.stop_timeout)
            self.reaper.close()
        return code

    async def reconfigure(self, old: Config, new: Config) -> None:
        self.cfg = new
        self.reloader.debounce = new.reload_debounce
        if bool(old.cmd) != bool(new.cmd):
            log.warning("adding or removing cmd takes effect when the helper restarts")
        elif (old.cmd, old.cmd_args, old.cmd_env, old.cmd_stdin) != (
                new.cmd, new.cmd_args, new.cmd_env, new.cmd_stdin):
            log.info("the new cmd settings apply when cmd next starts")

    # ----- the child -----

    @property
    def _stop_signal(self) -> Signals:
        return signal.Signals[self.cfg.stop_signal]

    def _external_parts(self) -> set[str]:
        return {EXTERNAL} if (self.cfg.pid_file_name or self.cfg.reload_cmd) else set()

    def _environment(self) -> dict[str, str]:
        return child_environment(os.environ, dict(self.cfg.cmd_env), self.child_env)

    def _start(self) -> bool:
        """Start cmd (the caller holds the lock). A failure is reported as an exit."""
        argv = [self.cfg.cmd, *split_cmd_args(self.cfg.cmd_args)]
        try:
            proc = self.reaper.spawn(argv, self._environment(),
                                     inherit_stdin=self.cfg.cmd_stdin,
                                     death_signal=signal.Signals[self.cfg.stop_signal])
        except OSError as exc:
            reason = exc.strerror or str(exc)
            code = EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_CANNOT_EXECUTE
            log.error("cannot start cmd %s: %s", self.cfg.cmd, reason)
            self.status.child_state = f"failed to start: {reason}"
            self.status.child_pid = None
            now = time.monotonic()
            self._exits.put_nowait(ChildExit(code, f"failed to start ({reason})", now, now))
            return False
        self._rerun_on_exit = False
        if self.starts:
            self.status.child_restarts += 1
        self.starts += 1
        self.child = proc
        self.status.child_state = "running"
        self.status.child_pid = proc.pid
        log.info("started cmd %s (pid %d)", self.cfg.cmd, proc.pid)
        proc.exit.add_done_callback(lambda _: self._on_exit(proc))
        if not self._atexit_registered:
            atexit.register(self._kill_at_exit)
            self._atexit_registered = True
        return True

    def _on_exit(self, proc: Process) -> None:
        if proc.exit.cancelled():
            return
        status = proc.exit.result()
        proc.ended = time.monotonic()
        description = describe_exit(status)
        if self.child is proc:
            self.status.child_state = description
            self.status.child_pid = None
        if proc.expected_exit:
            log.info("cmd (pid %d) stopped: %s", proc.pid, description)
            return
        log.log(logging.INFO if exit_code(status) == 0 else logging.WARNING,
                "cmd (pid %d) %s", proc.pid, description)
        self._exits.put_nowait(ChildExit(exit_code(status), description, proc.started,
                                         proc.ended))

    async def _stop(self, proc: Process, sig: Signals) -> int:
        """Stop `proc` with `sig`; SIGKILL its group after stop_timeout. Its wait status.

        Whatever is left in its process group once it has exited gets `sig` too, and
        SIGKILL when the same deadline passes.
        """
        proc.expected_exit = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.stop_timeout
        if proc.alive:
            send_signal(proc.pid, sig)
        status = await wait_exit(proc, deadline - loop.time())
        if status is None:
            log.warning("cmd (pid %d) still running %g s after %s: killing its process group",
                        proc.pid, self.cfg.stop_timeout, sig.name)
            signal_group(proc.pgid, signal.SIGKILL)
            status = await wait_exit(proc, KILL_WAIT)
            if status is None:
                log.error("cmd (pid %d) did not exit after SIGKILL", proc.pid)
                return int(signal.SIGKILL)  # the wait status of "killed by SIGKILL"
        await self._clear_group(proc.pgid, sig, deadline)
        return status

    async def _clear_group(self, pgid: int, sig: Signals, deadline: float) -> None:
        if not group_exists(pgid):
            return
        log.info("processes of cmd's group %d are still running: sending %s", pgid, sig.name)
        signal_group(pgid, sig)
        loop = asyncio.get_running_loop()
        while group_exists(pgid) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if group_exists(pgid):
            log.warning("killing what is left of cmd's process group %d", pgid)
            signal_group(pgid, signal.SIGKILL)
            kill_deadline = loop.time() + KILL_WAIT
            while group_exists(pgid) and loop.time() < kill_deadline:
                await asyncio.sleep(0.05)

    async def _terminate(self, sig: Signals) -> int | None:
        """SIGTERM/SIGINT: forward to the child, wait for it, then let the helper end."""
        self.stopping = True
        await self.reloader.close()
        async with self._lock:
            child = self.child
            if child is None or not child.alive:
                return None
            log.info("received %s: forwarding it to cmd (pid %d), waiting up to %g s",
                     sig.name, child.pid, self.cfg.stop_timeout)
            status = await self._stop(child, sig)
        code = exit_code(status)
        if self.cfg.on_cmd_exit == "exit":
            log.info("the helper exits with cmd's status %d", code)
            return code
        return None

    def _kill_at_exit(self) -> None:
        """Last resort if the helper ends without its shutdown phase (a crash)."""
        child = self.child
        if child is not None and child.alive:
            with contextlib.suppress(ValueError):
                signal_group(child.pgid, signal.SIGKILL)

    # ----- reloads -----

    async def _reload(self, parts: frozenset[str]) -> None:
        if self.stopping:
            return
        ok = True
        if CHILD in parts:
            ok = await self._reload_child() and ok
        if EXTERNAL in parts:
            if self.cfg.pid_file_name and self.cfg.renew_signal:
                sig = signal.Signals[self.cfg.renew_signal]
                ok = await signal_pid_file(self.cfg.pid_file_name, sig) and ok
            if self.cfg.reload_cmd:
                ok = await run_reload_cmd(self.reaper, self.cfg.reload_cmd, self._environment(),
                                          self.cfg.reload_timeout) and ok
        self.status.reloads["ok" if ok else "failed"] += 1

    async def _reload_child(self) -> bool:
        async with self._lock:
            if self.stopping:
                return True
            child = self.child
            if child is None or not child.alive:
                if self.cfg.on_cmd_exit != "renew":
                    return True  # restarting with backoff, or the helper is exiting
                log.info("renewal: cmd is not running: starting it")
                return self._start()
            if self.cfg.renew_action == "restart":
                log.info("renewal: restarting cmd (pid %d) on the new files", child.pid)
                await self._stop(child, self._stop_signal)
                return self._start()
            if not self.cfg.renew_signal:
                # Go sends nothing to a running cmd without renew_signal. If it is a reload
                # command still running on the old files, run it once more when it exits.
                self._rerun_on_exit = True
                log.info("renewal: cmd (pid %d) is running and renew_signal is not set: "
                         "nothing sent; it runs again if it exits", child.pid)
                return True
            sig = signal.Signals[self.cfg.renew_signal]
            send_signal(child.pid, sig)
            log.info("renewal: sent %s to cmd (pid %d)", sig.name, child.pid)
            return True
