"""Warnings when the X.509-SVID on disk is about to expire and no update has come.

After every write two timers are set from the leaf's validity: a warning when less than a
sixth of its lifetime is left, an error when it has expired (readiness turns bad then,
see helper.ops.health). The next write cancels both and sets new ones: nothing polls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from helper.features import Feature
from helper.identity.snapshot import X509Snapshot
from helper.identity.x509 import NEAR_EXPIRY_FRACTION
from helper.ops.status import Status

log = logging.getLogger("spiffe_helper.expiry")


def warning_time(not_before: datetime, not_after: datetime) -> datetime:
    """When less than 1/NEAR_EXPIRY_FRACTION of the lifetime is left."""
    return not_after - (not_after - not_before) / NEAR_EXPIRY_FRACTION


def delay_until(moment: datetime, now: datetime) -> float:
    return (moment - now).total_seconds()


class ExpiryWatch(Feature):
    """The two timers for the SVID on disk (`status` says which): a feature, reset at
    every write, cancelled at shutdown."""

    def __init__(self, status: Status) -> None:
        self.status = status
        self._timers: list[asyncio.TimerHandle] = []

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    async def written(self, pipeline: str, snapshot: X509Snapshot,
                      changed: Sequence[Path]) -> None:
        self.cancel()
        status = self.status
        if status.x509_not_before is None or status.x509_expiry is None:
            return
        loop = asyncio.get_running_loop()
        now = datetime.now(timezone.utc)
        warn_in = delay_until(warning_time(status.x509_not_before, status.x509_expiry), now)
        # Already short-lived on arrival: validation has warned about it at receipt.
        if warn_in > 0:
            self._timers.append(loop.call_later(warn_in, self._warn, status.x509_serial))
        expire_in = max(0.0, delay_until(status.x509_expiry, now))
        self._timers.append(loop.call_later(expire_in, self._expired, status.x509_serial))

    def _still_current(self, serial: int | None) -> bool:
        return self.status.x509_serial == serial

    def _warn(self, serial: int | None) -> None:
        if not self._still_current(serial):
            return
        status = self.status
        assert status.x509_expiry is not None
        left = delay_until(status.x509_expiry, datetime.now(timezone.utc))
        last = f"; last Workload API error: {status.last_error}" if status.last_error else ""
        log.warning("X.509-SVID %s (serial %x) has less than 1/%d of its lifetime left "
                    "(expires %s, in %.0f s) and no update has come from the Workload API%s",
                    status.spiffe_id, serial or 0, NEAR_EXPIRY_FRACTION,
                    status.x509_expiry.isoformat(), left, last)

    def _expired(self, serial: int | None) -> None:
        if not self._still_current(serial):
            return
        status = self.status
        assert status.x509_expiry is not None
        log.error("X.509-SVID %s (serial %x) expired at %s and no renewal arrived; the files "
                  "on disk hold an expired certificate and readiness reports Service "
                  "Unavailable", status.spiffe_id, serial or 0, status.x509_expiry.isoformat())

    async def shutdown(self, code: int) -> int:
        self.cancel()
        return code
