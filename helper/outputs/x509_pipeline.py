"""The X.509 pipeline: FetchX509SVID messages in, validated files on disk out.

Each message is validated (helper.identity.x509), rendered for the config in force
(helper.outputs.x509_files) and written atomically (helper.outputs.writer). The core
(helper/app.py) creates it like every pipeline (helper.features.Pipeline) and learns of
each write through the `PipelineEvents` it hands over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from helper._proto import workload_pb2
from helper.config import Config
from helper.errors import NotYetValid, Refused, WriteError
from helper.features import PipelineEvents
from helper.identity.snapshot import X509SVID, X509Snapshot
from helper.identity.x509 import select_svid, valid_from, validate_x509_response
from helper.ops.status import FAILED, WRITTEN, Status
from helper.outputs import preflight
from helper.outputs.pem import OutputFile
from helper.outputs.writer import AtomicWriter
from helper.outputs.x509_files import X509Renderer
from helper.tasks import run_until_first
from helper.workload import advice as hints
from helper.workload.address import Address
from helper.workload.backoff import workload_api_backoff
from helper.workload.client import RefusedMessage, WorkloadAPIError, WorkloadClient, watch
from helper.workload.mailbox import Latest

log = logging.getLogger("spiffe_helper")

PIPELINE = "x509"


class X509Pipeline:
    """FetchX509SVID messages in, validated files on disk out."""

    name = PIPELINE

    def __init__(
        self,
        cfg: Config,
        writer: AtomicWriter,
        status: Status,
        events: PipelineEvents,
        renderer: X509Renderer | None = None,
    ) -> None:
        self.cfg = cfg
        self.writer = writer
        self.status = status
        self.events = events
        self.renderer = renderer if renderer is not None else X509Renderer(cfg)
        self.backoff = workload_api_backoff()
        self.snapshot: X509Snapshot | None = None
        # The last write error that retrying cannot fix: one-shot mode gives up on it.
        self.fatal: WriteError | None = None
        self.once = False  # set by run()
        self.changed_files = False  # whether the last write changed any file
        self.complete = False  # the first write was reported
        # Held while a snapshot is being written (in a worker thread): a rewrite after a
        # config reload must not interleave with a rotation's write.
        self.lock = asyncio.Lock()
        # Set by accept() for a message refused only as not valid yet: when it will be.
        self.valid_from: datetime | None = None

    def accept(self, message: workload_pb2.X509SVIDResponse) -> list[Path] | None:
        """Validate, render and write one message. None when it was refused or not written.

        A message refused only because it is not valid yet sets `self.valid_from`: the
        moment it will pass (the caller tries it again then, unless a newer one came).
        """
        self.valid_from = None
        skew = timedelta(seconds=self.cfg.clock_skew)
        try:
            snapshot = validate_x509_response(message, skew=skew)
        except NotYetValid as exc:
            self._refused(exc, "X.509-SVID message")
            self.valid_from = valid_from(message, exc, skew)
            if self.valid_from is not None:
                log.warning("the refused X.509-SVID message is kept: it is written at %s "
                            "(clock_skew %g s) unless a newer message arrives first",
                            self.valid_from.isoformat(), self.cfg.clock_skew)
            return None
        except Refused as exc:
            self._refused(exc, "X.509-SVID message")
            return None
        self.backoff.reset()
        for key, reason in snapshot.dropped:
            # one federation's bad bundle must not stop the workload's own rotations
            self.status.dropped_bundles[metric_label(key)] += 1
            self.status.last_error = f"federated bundle dropped: {reason}"
            log.error("federated bundle dropped (the rest of the message is used): %s", reason)
        for svid in snapshot.svids:  # one line per SVID, as the Go helper logs it
            log.info("received X.509-SVID update for %s", svid.spiffe_id)
        return self.write(snapshot, rotation=True)

    def write_again(self) -> list[Path] | None:
        """Write the current snapshot again with `self.cfg` (after a config reload)."""
        if self.snapshot is None:
            return None
        return self.write(self.snapshot, rotation=False)

    def set_config(self, cfg: Config) -> None:
        self.cfg = cfg
        self.renderer.cfg = cfg

    async def rewrite(self) -> None:
        """Write the current snapshot with `self.cfg` (new names or modes after a reload).

        Files that changed are reported as after a rotation.
        """
        async with self.lock:
            # thousands of fsynced files (a credential folder): never on the event loop
            changed = await asyncio.to_thread(self.write_again)
            snapshot = self.snapshot
        if changed is not None and snapshot is not None:
            await self._report(snapshot, changed)

    async def retire(self) -> None:
        """Never called: turning the X.509 outputs on or off needs a restart."""

    async def _report(self, snapshot: X509Snapshot, changed: Sequence[Path]) -> None:
        await self.events.written(snapshot, changed)
        if not self.complete:
            self.complete = True
            await self.events.first_write()

    def unchanged_svid(self) -> X509SVID | None:
        """The SVID in force when the last write changed no file (one-shot says so)."""
        if self.snapshot is None or self.changed_files:
            return None
        return select_svid(self.snapshot, self.cfg.hint)

    def _refused(self, exc: Refused, what: str) -> None:
        self.status.refused[exc.rule] += 1
        self.status.last_error = f"refused message: {exc}"
        log.error("refused %s (rule %s): %s; files left as they are", what, exc.rule, exc.detail)

    def _write_failed(self, exc: WriteError, step: str,
                      files: Sequence[OutputFile] = ()) -> None:
        self.status.x509_write_status = FAILED
        self.status.write_failures += 1
        self.status.last_error = str(exc)
        if preflight.cannot_heal(exc):
            self.fatal = exc
        previous = any(os.path.lexists(file.path) for file in files)
        log.error("%s X.509-SVID files failed: %s%s", step, exc,
                  "; previous files left in place" if previous else "")

    def write(self, snapshot: X509Snapshot, *, rotation: bool) -> list[Path] | None:
        """Render and write `snapshot`; None when it was refused or not written."""
        try:
            svid = select_svid(snapshot, self.cfg.hint)
            files = self.renderer.render(snapshot)  # x509_svids can refuse too
        except Refused as exc:
            self._refused(exc, "X.509-SVID message" if rotation else "current X.509-SVIDs")
            if exc.rule == "hint_not_found":
                # as the Go helper: a failed write (liveness 503), so an orchestrator
                # restarts the workload and the operator sees it
                self.status.x509_write_status = FAILED
            return None
        except WriteError as exc:
            self._write_failed(exc, "rendering")
            return None
        try:
            changed = self.writer.write_set(files)
        except WriteError as exc:
            self._write_failed(exc, "writing", files)
            return None
        self.snapshot = snapshot
        first = self.status.x509_write_status != WRITTEN
        self.status.x509_write_status = WRITTEN
        self.status.spiffe_id = svid.spiffe_id
        self.status.x509_serial = svid.leaf.serial_number
        self.status.x509_not_before = svid.leaf.not_valid_before_utc
        self.status.x509_expiry = svid.leaf.not_valid_after_utc
        if changed:
            if rotation and not first:
                self.status.rotations += 1
                self.status.last_rotation = time.time()
            elif first:
                self.status.last_rotation = time.time()
            log.info("X.509-SVID %s (serial %x, expires %s): %d file(s) updated",
                     svid.spiffe_id, svid.leaf.serial_number,
                     svid.leaf.not_valid_after_utc.isoformat(), len(changed))
        elif not self.once:  # one-shot says it once, as it exits
            log.info("X.509-SVID %s (serial %x) unchanged on disk", svid.spiffe_id,
                     svid.leaf.serial_number)
        self.changed_files = bool(changed)
        return changed

    async def run(self, client: WorkloadClient, *, once: bool) -> None:
        """Consume the stream: until the first good write (once) or forever.

        Messages are received as they come and only the newest is processed: each is a
        complete snapshot, so when the agent pushes faster than files can be written (a
        push storm) the stale ones are skipped instead of written, and reloaded for, one
        by one, and no backlog piles up in gRPC's buffers.
        """

        shown_hint = ""

        self.once = once

        def on_retry(error: WorkloadAPIError | None, delay: float) -> None:
            nonlocal shown_hint
            self.status.reconnects += 1
            # a stream re-opened at once after it delivered messages is still healthy
            self.status.stream_healthy = error is None and delay == 0
            if isinstance(error, RefusedMessage):  # logged once by watch()
                self.status.refused[error.rule] += 1
            if error is not None:
                hint = agent_hint(self.cfg.address, error)
                self.status.last_error = (f"workload API: {hint} (UNAVAILABLE)" if hint
                                          else f"workload API: {error}")
                if hint and hint != shown_hint:
                    log.warning("%s", hint)  # once per outage, next to gRPC's own words
                shown_hint = hint or ""

        messages = watch(client.x509_svid_stream, backoff=self.backoff,
                         what=f"X.509-SVID stream from {client.address}", on_retry=on_retry)
        latest: Latest[workload_pb2.X509SVIDResponse] = Latest()

        async def receive() -> None:
            nonlocal shown_hint
            try:
                async for message in messages:
                    shown_hint = ""
                    self.status.stream_healthy = True
                    self.status.last_message = time.time()
                    if latest.put(message):
                        log.debug("X.509 message superseded before it was processed "
                                  "(%d so far)", latest.dropped)
            finally:
                await messages.aclose()

        async def process() -> None:
            message = await latest.get()
            while True:
                # validation and the fsynced writes run off the event loop: signals, health
                # and the receiver stay responsive, and the receiver keeps only the newest
                async with self.lock:
                    changed = await asyncio.to_thread(self.accept, message)
                    snapshot = self.snapshot
                    retry_at = self.valid_from
                if once and changed is None and self.fatal is not None:
                    raise self.fatal
                if changed is None or snapshot is None:
                    message = await next_message(retry_at, message)
                    continue
                await self._report(snapshot, changed)
                if once:
                    return
                message = await latest.get()

        async def next_message(retry_at: datetime | None,
                               kept: workload_pb2.X509SVIDResponse,
                               ) -> workload_pb2.X509SVIDResponse:
            """The next message; with `retry_at`, `kept` again at that moment (a timer,
            not a poll) unless a newer message arrives first."""
            if retry_at is None:
                return await latest.get()
            delay = (retry_at - datetime.now(timezone.utc)).total_seconds()
            try:
                return await asyncio.wait_for(latest.get(), max(0.0, delay))
            except asyncio.TimeoutError:
                log.info("the kept X.509-SVID message is valid now: writing it")
                return kept

        await run_until_first(receive(), process())


def metric_label(text: str, limit: int = 255) -> str:
    """A peer-chosen string made a bounded, printable metric label value."""
    safe = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return safe + ("..." if len(text) > limit else "")


def agent_hint(address: Address, error: WorkloadAPIError) -> str | None:
    """What to do when no agent answers at `address` (None for other errors)."""
    if getattr(error.code, "name", "") != "UNAVAILABLE":
        return None
    details = error.details.lower()
    exists = os.path.exists(address.path) if address.scheme == "unix" else None
    if exists is not False and not any(word in details for word in (
            "connect", "refused", "permission denied", "no such file")):
        return None  # an agent answered, then failed: gRPC's text says it
    return hints.no_agent(address, exists,
                          permission_denied=bool(exists) and "permission denied" in details)
