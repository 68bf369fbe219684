"""systemd's notification protocol without libsystemd: datagrams to $NOTIFY_SOCKET.

- ``STATUS=`` with the SPIFFE ID and expiry after every write that changed files;
- ``READY=1`` once, after the first complete write (and the child's start: this feature
  comes last in the core's feature tuple, so its ``ready`` phase runs last);
- ``RELOADING=1`` with ``MONOTONIC_USEC=`` when a config reload starts, ``READY=1`` when
  it is over (only once the helper has been ready: a reload must not announce readiness
  before the files exist);
- ``WATCHDOG=1`` every ``WATCHDOG_USEC``/2 while the Workload API stream is healthy
  (``Status.stream_healthy``): with the agent gone for longer than ``WatchdogSec``,
  systemd restarts the helper;
- ``STOPPING=1`` on the way out (its ``shutdown`` phase runs first).

Without ``NOTIFY_SOCKET`` nothing is sent. Sends never block: the socket is non-blocking
and a datagram that cannot be sent at once is dropped (with a debug line). The variables
are removed from the environment, as sd_notify(unset_environment=1) does, so that a child
that speaks the protocol itself (PostgreSQL, for one) does not talk to systemd in our name.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

from helper.features import Feature
from helper.identity.snapshot import X509Snapshot
from helper.ops.status import Status

log = logging.getLogger("spiffe_helper.sdnotify")

ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def socket_address(value: str) -> str | None:
    """The AF_UNIX address of $NOTIFY_SOCKET: a path, or '@name' for the abstract namespace."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: and relative paths are not supported


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not asked for."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    watchdog_pid = environ.get("WATCHDOG_PID", "")
    if watchdog_pid and watchdog_pid != str(pid):
        return None  # meant for another process
    return int(usec) / 1e6 / 2


def status_text(spiffe_id: str, serial: int | None, expiry_iso: str) -> str:
    """The STATUS= line: what identity is on disk and until when."""
    serial_text = f"serial {serial:x}, " if serial is not None else ""
    return f"{spiffe_id}: X.509-SVID on disk ({serial_text}expires {expiry_iso})"


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends notifications to one socket; every failure is logged at debug and ignored."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._socket.setblocking(False)

    def send(self, *lines: str) -> bool:
        message = "\n".join(lines).encode()
        try:
            self._socket.sendto(message, self.address)
        except OSError as exc:
            log.debug("sd_notify %s not sent: %s", lines[0].split("=")[0], exc)
            return False
        return True

    def close(self) -> None:
        self._socket.close()


class SystemdNotify(Feature):
    """The notifications of one helper run (a feature, from `status`)."""

    def __init__(self, status: Status, notifier: Notifier, watchdog: float | None) -> None:
        self.status = status
        self.notifier = notifier
        self.watchdog = watchdog
        self.is_ready = False  # READY=1 was sent

    def _status(self) -> str:
        status = self.status
        expiry = status.x509_expiry.isoformat() if status.x509_expiry else "unknown"
        return "STATUS=" + status_text(status.spiffe_id, status.x509_serial, expiry)

    async def written(self, pipeline: str, snapshot: X509Snapshot,
                      changed: Sequence[Path]) -> None:
        if changed or not self.is_ready:
            self.notifier.send(self._status())

    async def ready(self) -> None:
        self.is_ready = True
        self.notifier.send("READY=1", self._status())
        log.info("told systemd READY=1 (%s)", self.notifier_target())

    async def reloading(self) -> None:
        if self.is_ready:  # a reload must not announce readiness before the files exist
            self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}",
                               "STATUS=reloading the configuration")

    async def reloaded(self) -> None:
        if self.is_ready:
            self.notifier.send("READY=1", self._status())

    async def shutdown(self, code: int) -> int:
        self.notifier.send("STOPPING=1", f"STATUS=stopping (exit code {code})")
        self.notifier.close()
        return code

    async def serve(self) -> int | None:
        return None if self.watchdog is None else await self.ping_watchdog()

    async def ping_watchdog(self) -> int | None:
        """WATCHDOG=1 every half period while the Workload API stream is healthy."""
        assert self.watchdog is not None
        log.info("systemd watchdog: pinging every %.3g s while the Workload API stream is "
                 "healthy", self.watchdog)
        was_healthy = True
        while True:
            await asyncio.sleep(self.watchdog)
            status = self.status
            healthy = status.stream_healthy or not self.is_ready
            if healthy and not was_healthy:
                log.info("systemd watchdog: Workload API stream healthy again; pinging")
                self.notifier.send(self._status())
            if healthy:
                self.notifier.send("WATCHDOG=1")
            elif was_healthy:
                log.warning("systemd watchdog: not pinging while the Workload API stream is "
                            "down; systemd restarts the helper after WatchdogSec")
                last = f" ({status.last_error})" if status.last_error else ""
                self.notifier.send(f"STATUS=Workload API stream down{last}; "
                                   "not pinging the watchdog")
            was_healthy = healthy

    def notifier_target(self) -> str:
        address = self.notifier.address
        return "@" + address[1:] if address.startswith("\0") else address


def create(status: Status,
           environ: MutableMapping[str, str] | None = None) -> SystemdNotify | None:
    """Speak sd_notify when $NOTIFY_SOCKET is set (the variables are removed from
    `environ`, default os.environ). Put it after every other feature."""
    env = os.environ if environ is None else environ
    raw = env.get("NOTIFY_SOCKET", "")
    watchdog = watchdog_interval(env, os.getpid())
    for name in ENV_VARS:
        env.pop(name, None)
    if not raw:
        return None
    address = socket_address(raw)
    if address is None:
        log.warning("NOTIFY_SOCKET=%s is not a socket path or @name; not notifying systemd", raw)
        return None
    return SystemdNotify(status, Notifier(address), watchdog)
