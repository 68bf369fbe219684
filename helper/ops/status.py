"""What the helper knows about itself: write statuses, identity, counters.

Plain data updated by the pipeline and read by the health endpoint, metrics,
sd_notify and the demo. No I/O.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

UNWRITTEN = "unwritten"
WRITTEN = "written"
FAILED = "failed"


@dataclass
class Status:
    x509_write_status: str | None = None  # None when no X.509 output is configured
    jwt_write_status: dict[str, str] = field(default_factory=dict)
    spiffe_id: str = ""
    x509_serial: int | None = None
    x509_not_before: datetime | None = None
    x509_expiry: datetime | None = None
    last_rotation: float | None = None  # wall clock, seconds
    rotations: int = 0
    reconnects: int = 0
    write_failures: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # by rule name
    # federated bundles left out of a message because they were malformed, by trust domain
    dropped_bundles: Counter[str] = field(default_factory=Counter)
    jwt_expiry: dict[str, datetime] = field(default_factory=dict)  # by audience
    child_state: str = ""  # "", "running", "exited N", "killed by SIGX", "restarting"
    child_pid: int | None = None
    child_restarts: int = 0
    reloads: Counter[str] = field(default_factory=Counter)  # by result: ok, failed
    last_error: str = ""
    # The Workload API stream: healthy from the first message until an error or a stream
    # that ended without delivering anything; healthy again with the next message.
    stream_healthy: bool = False
    last_message: float | None = None  # wall clock, seconds
    config_reloads: Counter[str] = field(default_factory=Counter)  # by result: ok, failed
    # Wall clock (seconds) of the last `last_error` and of the last good X.509 write; kept
    # by __setattr__ so that no place that reports an error has to remember the time.
    last_error_at: float | None = None
    last_x509_ok_at: float | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "last_error" and value:
            super().__setattr__("last_error_at", time.time())
        elif name == "x509_write_status" and value == WRITTEN:
            super().__setattr__("last_x509_ok_at", time.time())

    def error_current(self, now: datetime) -> bool | None:
        """Is the last error still the state of things? None when there was none.

        Past once the helper is live, ready and streaming again and, with X.509 outputs,
        a good write came after the error (an old error must not read as today's)."""
        if not self.last_error:
            return None
        if not (self.live() and self.ready_at(now) and self.stream_healthy):
            return True
        if self.x509_write_status is None:
            return False
        return (self.last_x509_ok_at is None or self.last_error_at is None
                or self.last_x509_ok_at < self.last_error_at)

    def live(self) -> bool:
        """Live unless a write failed (the Go tool's rule)."""
        if self.x509_write_status == FAILED:
            return False
        return FAILED not in self.jwt_write_status.values()

    def ready(self) -> bool:
        """Ready once every configured file has been written."""
        if self.x509_write_status not in (None, WRITTEN):
            return False
        return all(s == WRITTEN for s in self.jwt_write_status.values())

    def expired(self, now: datetime) -> list[str]:
        """The SVIDs in use that have expired and were not renewed, named for a log line."""
        gone = []
        if self.x509_expiry is not None and self.x509_expiry <= now:
            gone.append(f"X.509-SVID {self.spiffe_id} (expired {self.x509_expiry.isoformat()})")
        gone += [f"JWT-SVID for audience {aud!r} (expired {when.isoformat()})"
                 for aud, when in sorted(self.jwt_expiry.items()) if when <= now]
        return gone

    def ready_at(self, now: datetime) -> bool:
        """Ready, and no SVID in use has expired without a renewal."""
        return self.ready() and not self.expired(now)
