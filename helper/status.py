"""What the helper knows about itself: write statuses, identity, counters.

Plain data updated by the pipeline and read by the health endpoint, metrics,
sd_notify and the demo. No I/O.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

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
