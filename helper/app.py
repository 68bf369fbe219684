"""The one place where the parts are wired together.

    config ─► Workload API streams ─► validated snapshot ─► rendered files ─► atomic writer
                                                                          └─► hooks: reload
                                                                              the child, ...

`X509Pipeline` turns FetchX509SVID messages into files (the JWT pipeline lives in
`helper.outputs.jwt_pipeline`). `Helper` runs the pipelines a config needs on one Workload API
client, once (one-shot mode) or forever (daemon mode), next to the signal dispatcher and
the side services; features attach to it through its hook lists. `build()` decides which
features a config turns on; `serve()` is build-and-run for callers such as the demo.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from helper._proto import workload_pb2
from helper.config import Config
from helper.config import load as load_config_file
from helper.errors import NotYetValid, Refused, WriteError
from helper.identity.snapshot import X509Snapshot
from helper.identity.x509 import select_svid, valid_from, validate_x509_response
from helper.ops.status import FAILED, UNWRITTEN, WRITTEN, Status
from helper.outputs import preflight
from helper.outputs import x509_files as x509_outputs
from helper.outputs.pem import OutputFile
from helper.outputs.writer import AtomicWriter
from helper.outputs.x509_files import X509Renderer
from helper.supervise.signals import STOP_SIGNALS, SignalQueue
from helper.tasks import run_all, run_until_first
from helper.workload import advice as hints
from helper.workload.address import Address
from helper.workload.backoff import workload_api_backoff
from helper.workload.client import RefusedMessage, WorkloadAPIError, WorkloadClient, watch
from helper.workload.mailbox import Latest

log = logging.getLogger("spiffe_helper")

# Called after a snapshot reached disk: (snapshot, paths that changed).
ChangeHook = Callable[[X509Snapshot, Sequence[Path]], Awaitable[None]]


class X509Pipeline:
    """FetchX509SVID messages in, validated files on disk out."""

    def __init__(
        self,
        cfg: Config,
        client: WorkloadClient,
        writer: AtomicWriter,
        status: Status,
        hooks: Sequence[ChangeHook] = (),
        renderer: X509Renderer | None = None,
    ) -> None:
        self.cfg = cfg
        self.client = client
        self.writer = writer
        self.status = status
        self.hooks = list(hooks)
        self.renderer = renderer if renderer is not None else X509Renderer(cfg)
        self.backoff = workload_api_backoff()
        self.snapshot: X509Snapshot | None = None
        # The last write error that retrying cannot fix: one-shot mode gives up on it.
        self.fatal: WriteError | None = None
        self.once = False  # set by run()
        self.changed_files = False  # whether the last write changed any file
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

    def rewrite(self) -> list[Path] | None:
        """Write the current snapshot again with `self.cfg` (after a config reload)."""
        if self.snapshot is None:
            return None
        return self.write(self.snapshot, rotation=False)

    def set_config(self, cfg: Config) -> None:
        self.cfg = cfg
        self.renderer.cfg = cfg

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

    async def run(self, *, once: bool) -> None:
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

        messages = watch(self.client.x509_svid_stream, backoff=self.backoff,
                         what=f"X.509-SVID stream from {self.client.address}", on_retry=on_retry)
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
                for hook in self.hooks:
                    await hook(snapshot, changed)
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


def initial_status(cfg: Config) -> Status:
    return Status(x509_write_status=UNWRITTEN if cfg.needs_x509 else None)


def output_directories(cfg: Config) -> set[Path]:
    return set(preflight.output_directories(cfg))


ReadyHook = Callable[[], Awaitable[None]]
# A long-running side task. Returning an int ends the helper with that exit code;
# returning None just ends the task.
Service = Callable[[], Coroutine[Any, Any, "int | None"]]
# Called for a captured signal; returning an int ends the helper with that exit code.
SignalHandler = Callable[[signal.Signals], Awaitable["int | None"]]
# Called on the way out, last attached first, with the exit code so far; may replace it.
ShutdownHook = Callable[[int], Awaitable[int]]
ReconfigureHook = Callable[[Config, Config], Awaitable[None]]
# Called with "start" before a config reload and "done" after it, whatever its outcome.
ReloadHook = Callable[[str], Awaitable[None]]
# Reads and validates the config file again, with the command line's overrides.
ConfigLoader = Callable[[], Config]
# Turns one kind of Workload API data into files: `run(client, once)`. With once=True it
# returns after its first complete write (one-shot mode); with once=False it runs until
# cancelled. Raises WorkloadAPIError for final errors. After its first complete write it
# calls `Helper.pipeline_written(name)`.
Pipeline = Callable[[WorkloadClient, bool], Coroutine[Any, Any, None]]


class Helper:
    """The running helper: the X.509 pipeline plus whatever features attach to it.

    Features (supervisor, health, metrics, sd_notify, JWT, ...) attach through the lists
    below and never reach into each other. `build()` is the one place that decides which
    features a config turns on.
    """

    def on_signal(self, sig: signal.Signals, handler: SignalHandler) -> None:
        self.signal_handlers.setdefault(sig, []).append(handler)

    def __init__(self, cfg: Config, *, status: Status | None = None,
                 stop: asyncio.Event | None = None,
                 load_config: ConfigLoader | None = None) -> None:
        self.cfg = cfg  # the configuration in force; a reload replaces it
        self.status = status if status is not None else initial_status(cfg)
        self.stop = stop if stop is not None else asyncio.Event()
        self.writer = AtomicWriter(owner=cfg.file_owner_id, group=cfg.file_group_id)
        self.write_hooks: list[ChangeHook] = []  # after every write, the first included
        self.change_hooks: list[ChangeHook] = []  # after a later write that changed files
        self.ready_hooks: list[ReadyHook] = []
        self.services: list[Service] = []
        # Several features may handle one signal (SIGHUP: forward to the child and re-read
        # the config); all handlers run, in the order they attached.
        self.signal_handlers: dict[signal.Signals, list[SignalHandler]] = {}
        self.shutdown_hooks: list[ShutdownHook] = []
        # Called with (old, new) after a valid config has been re-read.
        self.reconfigure_hooks: list[ReconfigureHook] = []
        self.reload_hooks: list[ReloadHook] = []
        self.load_config: ConfigLoader = load_config or self._load_config_file
        self._reconnect = asyncio.Event()
        # Added to the environment of every process the helper starts (cmd, reload_cmd).
        self.child_env: dict[str, str] = {}
        self.ready = asyncio.Event()
        self.pipeline: X509Pipeline | None = None
        # Only the pipelines the config needs run (a JWT-only config opens no X.509 stream).
        self.pipelines: dict[str, Pipeline] = {}
        self._written: set[str] = set()
        if cfg.needs_x509:
            self.pipelines["x509"] = self._run_x509

    async def pipeline_written(self, name: str) -> None:
        """Called by a pipeline after its first complete write; once every pipeline has
        written, the helper is ready and the ready hooks run."""
        self._written.add(name)
        if self.ready.is_set() or not self._written >= set(self.pipelines):
            return
        self.ready.set()
        for ready_hook in self.ready_hooks:
            await ready_hook()

    async def _run_x509(self, client: WorkloadClient, once: bool) -> None:
        if self.pipeline is None:
            self.pipeline = X509Pipeline(self.cfg, client, self.writer, self.status,
                                         [self._on_change])
        else:  # re-opened on a new client after agent_address changed
            self.pipeline.client = client
        await self.pipeline.run(once=once)

    def _load_config_file(self) -> Config:
        return load_config_file(self.cfg.source)

    def set_config(self, cfg: Config) -> None:
        """Put `cfg` in force (a reload); the stream and the child are left alone."""
        self.cfg = cfg
        self.writer.owner, self.writer.group = cfg.file_owner_id, cfg.file_group_id
        if self.pipeline is not None:
            self.pipeline.set_config(cfg)

    def request_reconnect(self) -> None:
        """Re-open the Workload API streams of `self.pipelines` on `self.cfg.address`
        (agent_address changed, or a pipeline was added or removed)."""
        self._reconnect.set()

    async def rewrite_current(self) -> None:
        """Write the current snapshot with `self.cfg` (new names or modes after a reload).

        Files that changed are reported to the hooks as after a rotation.
        """
        if self.pipeline is None:
            return
        async with self.pipeline.lock:
            # thousands of fsynced files (a credential folder): never on the event loop
            changed = await asyncio.to_thread(self.pipeline.rewrite)
            snapshot = self.pipeline.snapshot
        if changed is not None and snapshot is not None:
            await self._on_change(snapshot, changed)

    async def _on_change(self, snapshot: X509Snapshot, changed: Sequence[Path]) -> None:
        for write_hook in self.write_hooks:
            await write_hook(snapshot, changed)
        if "x509" not in self._written:
            await self.pipeline_written("x509")
            return  # the first write starts things; there is nothing to reload yet
        if changed and self.ready.is_set():
            for hook in self.change_hooks:
                await hook(snapshot, changed)

    async def run(self) -> int:
        """Run until done. Returns the process exit code."""
        # Blocking work (validation, fsynced writes, pid files, config reads) runs off the
        # event loop on ONE worker thread: writes stay in order, and an idle helper has two
        # threads, neither of which wakes (asyncio's default pool keeps up to cpus + 4).
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="spiffe-helper-io"))
        stale_files = await asyncio.to_thread(self.writer.cleanup_stale,
                                              output_directories(self.cfg))
        for stale in stale_files:
            log.info("removed temp file %s left by an earlier run", stale)
        self.client = WorkloadClient(self.cfg.address)
        try:
            captured = STOP_SIGNALS | set(self.signal_handlers)
            with SignalQueue(captured) as signals:
                if not self.cfg.daemon_mode:
                    code = await _one_shot(self, self.client, signals)
                else:
                    log.info("daemon mode: watching %s", self.cfg.address)
                    code = await run_until_first(
                        self._pipelines_forever(),
                        self._dispatch_signals(signals),
                        *(self._service(s) for s in self.services),
                    )
                for shutdown in reversed(self.shutdown_hooks):
                    code = await shutdown(code)
        finally:
            await self.client.close()
        return code

    async def _pipelines_forever(self) -> int:
        """Every pipeline on one client; all re-opened on a new client when a reload
        changes agent_address."""

        async def reconnect_requested() -> int | None:
            await self._reconnect.wait()
            return None

        while True:
            self._reconnect.clear()
            code = await run_until_first(
                *(pipeline_forever(run, self.client) for run in self.pipelines.values()),
                reconnect_requested())
            if code is not None:
                return code
            if self.client.address == self.cfg.address:
                # the pipelines changed (a reload turned the JWT outputs on or off)
                log.info("re-opening the Workload API streams for %s",
                         ", ".join(self.pipelines) or "nothing")
                continue
            old, self.client = self.client, WorkloadClient(self.cfg.address)
            self.status.stream_healthy = False
            log.info("agent_address changed: re-connecting from %s to %s",
                     old.address, self.cfg.address)
            await old.close()

    async def _service(self, service: Service) -> int:
        code = await service()
        if code is None:
            await asyncio.Event().wait()  # a finished side task does not end the helper
        assert code is not None
        return code

    async def _dispatch_signals(self, signals: SignalQueue) -> int:
        async def next_signal() -> int:
            while True:
                sig = await signals.get()
                for handler in self.signal_handlers.get(sig, ()):
                    code = await handler(sig)
                    if code is not None:
                        return code
                if sig in STOP_SIGNALS:
                    log.info("received %s: shutting down", sig.name)
                    return 0

        async def on_event() -> int:
            await self.stop.wait()
            return 0

        return await run_until_first(next_signal(), on_event())


def build(cfg: Config, *, stop: asyncio.Event | None = None,
          status: Status | None = None, load_config: ConfigLoader | None = None) -> Helper:
    """The one place that decides which features a configuration turns on.

    `load_config` re-reads the configuration for a reload (the CLI passes one that applies
    its flags again); by default the file `cfg.source` is read.
    """
    helper = Helper(cfg, status=status, stop=stop, load_config=load_config)
    x509_outputs.attach(helper)
    if cfg.needs_jwt:
        # JWT parsing and the JWKS code are imported only by configs that fetch JWTs
        from helper.outputs import jwt_pipeline as jwt_outputs

        jwt_outputs.attach(helper)
    if cfg.daemon_mode:
        # not on the one-shot path: none of these modules is imported there
        from helper.config import reconfigure
        from helper.ops import expiry, health, sdnotify
        from helper.supervise import supervisor

        health.attach(helper)
        expiry.attach(helper)
        # reconfigure before supervisor: on SIGHUP the files are rewritten for the new
        # config before the child gets the forwarded signal
        reconfigure.attach(helper)
        supervisor.attach(helper)
        # Keep sd_notify last: its ready hook sends READY=1 and must run after every other
        # ready hook (the supervisor's starts the child), its shutdown hook (STOPPING=1)
        # runs first.
        sdnotify.attach(helper)
    return helper


async def serve(cfg: Config, *, hooks: Sequence[ChangeHook] = (),
                status: Status | None = None, stop: asyncio.Event | None = None) -> int:
    """Run the helper for `cfg` until done, or until `stop` is set; the exit code.

    `hooks` are called after every write, the first included (the demo watches with them).
    """
    helper = build(cfg, stop=stop, status=status)
    helper.write_hooks.extend(hooks)
    return await helper.run()


async def pipeline_forever(run: Pipeline, client: WorkloadClient) -> int:
    try:
        await run(client, False)
    except WorkloadAPIError as exc:
        log.error("workload API: %s (not retried)", exc)
        return 1
    return 0


async def _until_stop(signals: SignalQueue, stop: asyncio.Event) -> int:
    """A one-shot run stopped before every file was written: a signal makes it exit 1 (as
    the Go helper: an init container killed mid-start must not report success)."""

    async def on_signal() -> int:
        sig = await signals.get()
        log.error("received %s before every file was written: exiting 1", sig.name)
        return 1

    async def on_event() -> int:
        await stop.wait()
        return 0

    return await run_until_first(on_signal(), on_event())


async def _one_shot(helper: Helper, client: WorkloadClient, signals: SignalQueue) -> int:
    """Every pipeline writes once (concurrently), within startup_timeout for them all."""
    cfg = helper.cfg

    async def first_writes() -> int:
        await run_all(*(run(client, True) for run in helper.pipelines.values()))
        pipeline = helper.pipeline
        if set(helper.pipelines) == {"x509"} and pipeline is not None \
                and pipeline.snapshot is not None and not pipeline.changed_files:
            svid = select_svid(pipeline.snapshot, cfg.hint)
            log.info("one-shot: the files on disk are already current (X.509-SVID %s, "
                     "serial %x); nothing written; exiting", svid.spiffe_id,
                     svid.leaf.serial_number)
        else:
            log.info("one-shot: files written; exiting")
        return 0

    async def deadline() -> int:
        await asyncio.sleep(cfg.startup_timeout)
        missing = sorted(set(helper.pipelines) - helper._written)
        last = helper.status.last_error or f"nothing valid received ({', '.join(missing)})"
        log.error("one-shot: gave up after %g s (startup_timeout): %s", cfg.startup_timeout, last)
        return 1

    try:
        return await run_until_first(first_writes(), deadline(),
                                     _until_stop(signals, helper.stop))
    except WorkloadAPIError as exc:
        log.error("workload API: %s (not retried)", exc)
        return 1
    except WriteError as exc:
        # Read-only file system, permission denied, disk full, directory gone: every
        # retry until startup_timeout would fail the same way.
        log.error("one-shot: giving up at once, retrying cannot fix this: %s", exc)
        return 1
