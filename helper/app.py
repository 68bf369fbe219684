"""The core: the one place where the parts are wired together and run.

    config ─► Workload API streams ─► validated snapshot ─► rendered files ─► atomic writer
                                                                          └─► features: reload
                                                                              the child, ...

`Core` runs the pipelines a config needs (helper.features.Pipeline: X.509 and JWT, created
the same way) on one Workload API client, once (one-shot mode) or forever (daemon mode),
next to the signal dispatcher and the features (helper.features.Feature), which it calls
at its phases in the order of its feature tuple. It also orchestrates a config reload:
load, plan (helper.config.reload_plan), put in force, features' reconfigure, pipelines.
`build()` decides which features a config turns on and in what order; `serve()` is
build-and-run for callers such as the demo. Only helper.cli imports this module.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from helper.config import Config, ConfigError, config_warnings
from helper.config import load as load_config_file
from helper.errors import WriteError
from helper.features import Feature, Pipeline, PipelineEvents, RequestReload
from helper.identity.snapshot import X509Snapshot
from helper.ops.status import UNWRITTEN, Status
from helper.outputs import preflight, x509_files
from helper.outputs.writer import AtomicWriter
from helper.outputs.x509_pipeline import X509Pipeline
from helper.safefile import UnreadableFile
from helper.supervise.signals import STOP_SIGNALS, SignalQueue
from helper.tasks import run_all, run_until_first
from helper.workload.client import WorkloadAPIError, WorkloadClient

if TYPE_CHECKING:
    from helper.config.reload_plan import ReloadPlan

log = logging.getLogger("spiffe_helper")
reload_log = logging.getLogger("spiffe_helper.reload")

X509, JWT = "x509", "jwt"  # the pipelines' names
# The order in which a reload writes the pipelines' files again: the JWT files first, so
# that the child, which the X.509 rewrite reloads, finds every file new.
REWRITE_ORDER = (JWT, X509)
# A SIGHUP re-reads the config (daemon mode) before any feature sees the signal: the files
# are rewritten for the new config before the supervisor forwards SIGHUP to the child.
RELOAD_SIGNAL = signal.SIGHUP

# Reads and validates the config file again, with the command line's overrides.
ConfigLoader = Callable[[], Config]


def initial_status(cfg: Config) -> Status:
    return Status(x509_write_status=UNWRITTEN if cfg.needs_x509 else None)


def output_directories(cfg: Config) -> set[Path]:
    return set(preflight.output_directories(cfg))


class Core:
    """The running helper: its pipelines, its features and the config in force."""

    def __init__(self, cfg: Config, *, status: Status | None = None,
                 stop: asyncio.Event | None = None, load_config: ConfigLoader | None = None,
                 features: Sequence[Feature] = ()) -> None:
        self.cfg = cfg  # the configuration in force; a reload replaces it
        self.status = status if status is not None else initial_status(cfg)
        self.stop = stop if stop is not None else asyncio.Event()
        self.writer = AtomicWriter(owner=cfg.file_owner_id, group=cfg.file_group_id)
        # Called at every phase in this order; shutdown in reverse (build() decides it).
        self.features: tuple[Feature, ...] = tuple(features)
        self.load_config: ConfigLoader = load_config or self._load_config_file
        self.ready = asyncio.Event()  # every pipeline has written once
        # Only the pipelines the config needs run (a JWT-only config opens no X.509 stream).
        self.pipelines: dict[str, Pipeline] = {}
        self._complete: set[str] = set()  # pipelines that have written once
        self._reconnect = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        if cfg.needs_x509:
            self._add_pipeline(X509)
        if cfg.needs_jwt:
            self._add_pipeline(JWT)

    # ----- pipelines -----

    def _add_pipeline(self, name: str) -> None:
        async def written(snapshot: X509Snapshot, changed: Sequence[Path]) -> None:
            await self._written(name, snapshot, changed)

        async def first_write() -> None:
            await self._first_write(name)

        events = PipelineEvents(written=written, first_write=first_write)
        pipeline: Pipeline
        if name == X509:
            pipeline = X509Pipeline(self.cfg, self.writer, self.status, events)
        else:
            # JWT parsing and the JWKS code are imported only by configs that fetch JWTs
            from helper.outputs.jwt_pipeline import JWTPipeline

            pipeline = JWTPipeline(self.cfg, self.writer, self.status, events)
        self.pipelines[name] = pipeline

    async def _written(self, name: str, snapshot: X509Snapshot,
                       changed: Sequence[Path]) -> None:
        """Phases `written`, then `changed` (a later write that changed files)."""
        for feature in self.features:
            await feature.written(name, snapshot, changed)
        if name in self._complete and changed and self.ready.is_set():
            for feature in self.features:
                await feature.changed(name, snapshot, changed)

    async def _first_write(self, name: str) -> None:
        """Phase `ready` once every pipeline has written once."""
        self._complete.add(name)
        if self.ready.is_set() or not self._complete >= set(self.pipelines):
            return
        self.ready.set()
        for feature in self.features:
            await feature.ready()

    # ----- running -----

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
            with SignalQueue(self._captured_signals()) as signals:
                if not self.cfg.daemon_mode:
                    code = await self._one_shot(signals)
                else:
                    log.info("daemon mode: watching %s", self.cfg.address)
                    code = await run_until_first(
                        self._pipelines_forever(),
                        self._dispatch_signals(signals),
                        *(self._serve(feature) for feature in self.features),
                    )
                for feature in reversed(self.features):
                    code = await feature.shutdown(code)
        finally:
            await self.client.close()
        return code

    def _captured_signals(self) -> set[signal.Signals]:
        captured = set(STOP_SIGNALS)
        if self.cfg.daemon_mode:
            captured.add(RELOAD_SIGNAL)
        for feature in self.features:
            captured |= feature.signals
        return captured

    async def _pipelines_forever(self) -> int:
        """Every pipeline on one client; all re-opened on a new client when a reload
        changes agent_address."""

        async def reconnect_requested() -> int | None:
            await self._reconnect.wait()
            return None

        while True:
            self._reconnect.clear()
            code = await run_until_first(
                *(pipeline_forever(p, self.client) for p in self.pipelines.values()),
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

    @staticmethod
    async def _serve(feature: Feature) -> int:
        code = await feature.serve()
        if code is None:
            await asyncio.Event().wait()  # a finished side task does not end the helper
        assert code is not None
        return code

    async def _dispatch_signals(self, signals: SignalQueue) -> int:
        async def next_signal() -> int:
            while True:
                sig = await signals.get()
                if sig == RELOAD_SIGNAL:
                    await self.reload(sig.name)
                for feature in self.features:
                    if sig in feature.signals:
                        code = await feature.signal(sig)
                        if code is not None:
                            return code
                if sig in STOP_SIGNALS:
                    log.info("received %s: shutting down", sig.name)
                    return 0

        async def on_event() -> int:
            await self.stop.wait()
            return 0

        return await run_until_first(next_signal(), on_event())

    async def _one_shot(self, signals: SignalQueue) -> int:
        """Every pipeline writes once (concurrently), within startup_timeout for them all."""
        cfg = self.cfg

        async def first_writes() -> int:
            await run_all(*(p.run(self.client, once=True) for p in self.pipelines.values()))
            x509 = self.pipelines.get(X509)
            svid = x509.unchanged_svid() if isinstance(x509, X509Pipeline) else None
            if set(self.pipelines) == {X509} and svid is not None:
                log.info("one-shot: the files on disk are already current (X.509-SVID %s, "
                         "serial %x); nothing written; exiting", svid.spiffe_id,
                         svid.leaf.serial_number)
            else:
                log.info("one-shot: files written; exiting")
            return 0

        async def deadline() -> int:
            await asyncio.sleep(cfg.startup_timeout)
            missing = sorted(set(self.pipelines) - self._complete)
            last = self.status.last_error or f"nothing valid received ({', '.join(missing)})"
            log.error("one-shot: gave up after %g s (startup_timeout): %s",
                      cfg.startup_timeout, last)
            return 1

        try:
            return await run_until_first(first_writes(), deadline(),
                                         _until_stop(signals, self.stop))
        except WorkloadAPIError as exc:
            log.error("workload API: %s (not retried)", exc)
            return 1
        except WriteError as exc:
            # Read-only file system, permission denied, disk full, directory gone: every
            # retry until startup_timeout would fail the same way.
            log.error("one-shot: giving up at once, retrying cannot fix this: %s", exc)
            return 1

    # ----- config reload -----

    def _load_config_file(self) -> Config:
        return load_config_file(self.cfg.source)

    async def reload(self, why: str) -> bool:
        """Re-read and apply the config; True when a valid config was read. One at a
        time; phases `reloading` and `reloaded` around it."""
        async with self._reload_lock:
            for feature in self.features:
                await feature.reloading()
            try:
                valid = await self._reload(why)
            except Exception as exc:  # a feature failed to apply it: keep running, say so
                reload_log.error("config reload (%s): applying the new configuration failed: "
                                 "%s: %s", why, type(exc).__name__, exc)
                valid = False
            finally:
                for feature in self.features:
                    await feature.reloaded()
            self.status.config_reloads["ok" if valid else "failed"] += 1
            return valid

    async def _reload(self, why: str) -> bool:
        # daemon mode only: not on the one-shot path
        from helper.config.reload_plan import CHILD, RELOAD_EFFECTS, plan_reload
        from helper.config.watch import read_config_bytes
        from helper.ops import logs

        source = self.cfg.source
        if not source:
            reload_log.warning("config reload (%s): no config file to read again", why)
            return False
        try:
            await asyncio.to_thread(read_config_bytes, source)
        except UnreadableFile as exc:
            reload_log.error("config reload (%s) refused, the configuration in force stays: "
                             "%s: %s", why, source, exc)
            return False
        except OSError:
            pass  # load_config says what is wrong in its own words
        try:
            new = await asyncio.to_thread(self.load_config)
        except ConfigError as exc:
            reload_log.error("config reload (%s) refused, the configuration in force stays: "
                             "%s", why, exc)
            return False
        old = self.cfg
        plan = plan_reload(old, new)
        if not plan.changed:
            reload_log.info("config reload (%s): %s has no change", why, source)
            return True
        if plan.deferred:
            reload_log.warning("config reload (%s): restart-only settings changed in %s: %s; "
                               "they take effect when the helper is restarted, their old "
                               "values stay in force until then", why, source,
                               ", ".join(plan.deferred))
        if not plan.applied:
            return True
        self._put_in_force(plan.config)
        if plan.relog:
            logs.setup(plan.config.log_level, plan.config.log_format)
        for warning in config_warnings(plan.config):
            reload_log.warning("%s: %s", source, warning)
        child = [key for key in plan.applied if CHILD in RELOAD_EFFECTS.get(key, ())]
        reload_log.info("config reload (%s): %s now in force: %s changed%s", why, source,
                        ", ".join(plan.applied),
                        f" ({', '.join(child)} when cmd next starts)" if child else "")
        # every feature holds the new config before a rewrite reaches it
        for feature in self.features:
            await feature.reconfigure(old, plan.config)
        await self._apply_to_pipelines(old, plan)
        return True

    def _put_in_force(self, cfg: Config) -> None:
        """`cfg` in force for the core, the writer and the pipelines (nothing written)."""
        self.cfg = cfg
        self.writer.owner, self.writer.group = cfg.file_owner_id, cfg.file_group_id
        for pipeline in self.pipelines.values():
            pipeline.set_config(cfg)

    async def _apply_to_pipelines(self, old: Config, plan: ReloadPlan) -> None:
        """Pipelines turned off or on, files written again, streams re-opened."""
        new = plan.config
        kept = set(self.pipelines)
        if JWT in self.pipelines and not new.needs_jwt:
            # a reload turned the JWT outputs off: stop them and remove what they wrote
            retired = self.pipelines.pop(JWT)
            self._reconnect.set()
            await retired.retire()
        for name in REWRITE_ORDER:
            pipeline = self.pipelines.get(name)
            if pipeline is not None and name in kept and plan.rewrites(name):
                await pipeline.rewrite()
            if name == JWT and plan.rewrite_jwt and not old.needs_jwt and new.needs_jwt:
                self._add_pipeline(JWT)
                self._reconnect.set()  # the pipelines start again, the JWT one with them
        if plan.reconnect:
            self._reconnect.set()


def build(cfg: Config, *, stop: asyncio.Event | None = None, status: Status | None = None,
          load_config: ConfigLoader | None = None,
          environ: MutableMapping[str, str] | None = None) -> Core:
    """The one place that decides which features a configuration turns on, in order.

    `load_config` re-reads the configuration for a reload (the CLI passes one that applies
    its flags again); by default the file `cfg.source` is read. `environ` is where
    sd_notify finds NOTIFY_SOCKET (default os.environ).
    """
    core = Core(cfg, status=status, stop=stop, load_config=load_config)
    if cfg.daemon_mode:
        core.features = daemon_features(cfg, core.status, core.reload, environ)
    return core


def daemon_features(cfg: Config, status: Status,
                    request_reload: RequestReload,
                    environ: MutableMapping[str, str] | None = None) -> tuple[Feature, ...]:
    """The daemon's features, in the order of their phases (shutdown in reverse)."""
    # not on the one-shot path: none of these modules is imported there
    from helper.config.watch import ConfigWatcher
    from helper.ops import expiry, health, sdnotify
    from helper.supervise import supervisor

    features = (
        health.HealthServer(cfg, status),
        expiry.ExpiryWatch(status),
        ConfigWatcher(cfg, request_reload),
        supervisor.create(cfg, status, x509_files.exported_environment(cfg)),
        # last: its `ready` (READY=1) after the supervisor's has started the child, and
        # its `shutdown` (STOPPING=1) first
        sdnotify.create(status, environ),
    )
    return tuple(feature for feature in features if feature is not None)


async def serve(cfg: Config, *, features: Sequence[Feature] = (),
                status: Status | None = None, stop: asyncio.Event | None = None) -> int:
    """Run the helper for `cfg` until done, or until `stop` is set; the exit code.

    `features` run after the ones `cfg` turns on (the demo watches the writes with one).
    """
    core = build(cfg, stop=stop, status=status)
    core.features += tuple(features)
    return await core.run()


async def pipeline_forever(pipeline: Pipeline, client: WorkloadClient) -> int:
    try:
        await pipeline.run(client, once=False)
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
