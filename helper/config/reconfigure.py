"""Live configuration reload: SIGHUP, and with ``watch_config = true`` a change of the file.

The file is read and validated again. An invalid config is logged in one line and the one
in force stays. A valid one takes effect without dropping the child, and the Workload API
stream wherever the change allows it. Every key of the registry has its place in
`RELOAD_EFFECTS` (tests/config/test_reload_keys.py walks the registry, so a new key cannot be
forgotten):

- ``x509``: the current X.509-SVID is written again at once with the new settings (names,
  modes, owner, layouts; files under old names are left where they are);
- ``jwt``: the JWT outputs are brought in line at once: tokens and the bundle file are
  written again (new modes, owner, names), a new ``jwt_svids`` entry is fetched, the file
  of a removed one is removed; turning the JWT outputs on or off starts or stops them;
- ``live``: in force at once, for the next event (health listener re-bound, log settings,
  signals, reload_cmd, agent_address re-connects, clock_skew for the next message, ...);
- ``child``: in force when cmd next starts (its environment and stdin);
- ``restart``: daemon_mode, cmd, cmd_args, and turning the X.509 outputs on or off need a
  new process: they keep their old values, and the reload says so in one line.

`plan_reload` (what changed, what applies live) is pure; the rest is the I/O around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helper.config import Config, ConfigError, config_warnings
from helper.ops import logs
from helper.safefile import UnreadableFile, read_small_file

if TYPE_CHECKING:
    from helper.app import Helper

log = logging.getLogger("spiffe_helper.reload")

X509, JWT, LIVE, CHILD, RESTART = "x509", "jwt", "live", "child", "restart"
EFFECTS = frozenset({X509, JWT, LIVE, CHILD, RESTART})
# What a change of each key does at a reload (health_checks sub-keys dotted).
RELOAD_EFFECTS: dict[str, frozenset[str]] = {
    **dict.fromkeys((
        "svid_file_name", "svid_key_file_name", "svid_bundle_file_name", "cert_file_mode",
        "key_file_mode", "add_intermediates_to_bundle", "include_federated_domains",
        "omit_expired", "x509_svids", "svid_combined_file_name", "pkcs12_file_name",
        "pkcs12_password_file", "credential_folder", "spiffe_bundle_map_file_name",
    ), frozenset({X509})),
    **dict.fromkeys(("cert_dir", "hint", "file_owner", "file_group"), frozenset({X509, JWT})),
    **dict.fromkeys(("jwt_svids", "jwt_bundle_file_name", "jwt_bundle_file_mode",
                     "jwt_svid_file_mode"), frozenset({JWT})),
    **dict.fromkeys((
        "agent_address", "pid_file_name", "renew_signal", "startup_timeout", "watch_config",
        "log_level", "log_format", "renew_action", "stop_signal", "stop_timeout",
        "on_cmd_exit", "reload_debounce", "reload_cmd", "reload_timeout", "clock_skew",
        "health_checks.listener_enabled", "health_checks.bind_port",
        "health_checks.liveness_path", "health_checks.readiness_path",
        "health_checks.bind_address",
    ), frozenset({LIVE})),
    **dict.fromkeys(("cmd_stdin", "cmd_env"), frozenset({CHILD})),
    **dict.fromkeys(("daemon_mode", "cmd", "cmd_args"), frozenset({RESTART})),
}
# Rendering the X.509 files reads these: a change means writing the current SVID again.
REWRITE_KEYS = frozenset(k for k, effects in RELOAD_EFFECTS.items() if X509 in effects)
JWT_KEYS = frozenset(k for k, effects in RELOAD_EFFECTS.items() if JWT in effects)
# Changes that need a new process; their old values stay in force until then.
RESTART_KEYS = tuple(k for k, effects in RELOAD_EFFECTS.items() if RESTART in effects)
X509_NAMES = ("svid_file_name", "svid_key_file_name", "svid_bundle_file_name")
# The keys that turn X.509 outputs on: the X.509 stream runs only when one is set at start.
X509_OUTPUT_KEYS = (*X509_NAMES, "x509_svids", "svid_combined_file_name", "pkcs12_file_name",
                    "credential_folder", "spiffe_bundle_map_file_name")
JWT_OUTPUT_KEYS = ("jwt_svids", "jwt_bundle_file_name")
LOG_KEYS = frozenset({"log_level", "log_format"})
DEBOUNCE_SECONDS = 0.2


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload from `old` to `new` does."""

    changed: tuple[str, ...]  # every key that differs, nested ones dotted (health_checks.x)
    deferred: tuple[str, ...]  # changed keys that need a restart; their old values stay
    config: Config  # the configuration to put in force

    @property
    def applied(self) -> tuple[str, ...]:
        return tuple(key for key in self.changed if key not in self.deferred)

    @property
    def rewrite_files(self) -> bool:
        return any(key in REWRITE_KEYS for key in self.applied)

    @property
    def rewrite_jwt(self) -> bool:
        return any(key in JWT_KEYS for key in self.applied)

    @property
    def reconnect(self) -> bool:
        return "agent_address" in self.applied

    @property
    def relog(self) -> bool:
        return any(key in LOG_KEYS for key in self.applied)


def changed_keys(old: Config, new: Config) -> tuple[str, ...]:
    """Config keys whose values differ, in registry order; health_checks.* one by one."""
    keys: list[str] = []
    for f in dataclasses.fields(Config):
        if f.name in ("source", "address"):
            continue
        before, after = getattr(old, f.name), getattr(new, f.name)
        if before == after:
            continue
        if dataclasses.is_dataclass(before) and not isinstance(before, type):
            keys += [f"{f.name}.{sub.name}" for sub in dataclasses.fields(before)
                     if getattr(before, sub.name) != getattr(after, sub.name)]
        else:
            keys.append(f.name)
    return tuple(keys)


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Decide what a reload from `old` to `new` changes and what can be applied live."""
    changed = changed_keys(old, new)
    deferred = [key for key in RESTART_KEYS if key in changed]
    keep: dict[str, Any] = {key: getattr(old, key) for key in deferred}
    if old.x509_enabled != new.x509_enabled or old.needs_x509 != new.needs_x509:
        # The X.509 stream and its statuses are set up at start.
        deferred += [key for key in X509_OUTPUT_KEYS if key in changed]
        keep.update({key: getattr(old, key) for key in X509_OUTPUT_KEYS})
    config = dataclasses.replace(new, **keep) if keep else new
    if old.needs_jwt and not config.needs_jwt and not config.needs_x509:
        # the JWT outputs cannot stop while nothing else runs
        deferred += [key for key in JWT_OUTPUT_KEYS if key in changed]
        config = dataclasses.replace(config, **{key: getattr(old, key)
                                                for key in JWT_OUTPUT_KEYS})
    return ReloadPlan(changed=changed, deferred=tuple(deferred), config=config)


# A config file larger than this is not a config file (and is not read at reload).
MAX_CONFIG_BYTES = 1 << 20


def read_config_bytes(path: str) -> bytes:
    """The config file's bytes, read without ever waiting (a FIFO or device put at its
    path is UnreadableFile, never a thread stuck until a writer comes)."""
    return read_small_file(path, MAX_CONFIG_BYTES).data


def file_digest(path: str) -> bytes | None:
    try:
        return hashlib.sha256(read_config_bytes(path)).digest()
    except (OSError, UnreadableFile):
        return None


class Reloader:
    """Re-reads the config for `helper` and applies it; one reload at a time."""

    def __init__(self, helper: Helper) -> None:
        self.helper = helper
        self._lock = asyncio.Lock()
        self.digest = file_digest(helper.cfg.source) if helper.cfg.source else None
        self.watcher: ConfigWatcher | None = None

    async def reload(self, why: str) -> bool:
        """Re-read and apply the config; True when a valid config was read."""
        async with self._lock:
            for hook in self.helper.reload_hooks:
                await hook("start")
            try:
                valid = await self._reload(why)
            except Exception as exc:  # a feature failed to apply it: keep running, say so
                log.error("config reload (%s): applying the new configuration failed: %s: %s",
                          why, type(exc).__name__, exc)
                valid = False
            finally:
                for hook in self.helper.reload_hooks:
                    await hook("done")
            self.helper.status.config_reloads["ok" if valid else "failed"] += 1
            return valid

    async def _reload(self, why: str) -> bool:
        helper = self.helper
        source = helper.cfg.source
        if not source:
            log.warning("config reload (%s): no config file to read again", why)
            return False
        try:
            await asyncio.to_thread(read_config_bytes, source)
        except UnreadableFile as exc:
            log.error("config reload (%s) refused, the configuration in force stays: %s: %s",
                      why, source, exc)
            return False
        except OSError:
            pass  # load_config says what is wrong in its own words
        self.digest = await asyncio.to_thread(file_digest, source)
        try:
            new = await asyncio.to_thread(helper.load_config)
        except ConfigError as exc:
            log.error("config reload (%s) refused, the configuration in force stays: %s",
                      why, exc)
            return False
        old = helper.cfg
        plan = plan_reload(old, new)
        if not plan.changed:
            log.info("config reload (%s): %s has no change", why, source)
            return True
        if plan.deferred:
            log.warning("config reload (%s): restart-only settings changed in %s: %s; "
                        "they take effect when the helper is restarted, their old values "
                        "stay in force until then", why, source, ", ".join(plan.deferred))
        if not plan.applied:
            return True
        helper.set_config(plan.config)
        if plan.relog:
            logs.setup(plan.config.log_level, plan.config.log_format)
        for warning in config_warnings(plan.config):
            log.warning("%s: %s", source, warning)
        child = [key for key in plan.applied if CHILD in RELOAD_EFFECTS.get(key, ())]
        log.info("config reload (%s): %s now in force: %s changed%s", why, source,
                 ", ".join(plan.applied),
                 f" ({', '.join(child)} when cmd next starts)" if child else "")
        # a copy: a hook may attach or detach features (the JWT outputs)
        for hook in list(helper.reconfigure_hooks):
            await hook(old, plan.config)
        if plan.rewrite_jwt and not old.needs_jwt and plan.config.needs_jwt:
            from helper.outputs import jwt_pipeline as jwt_outputs

            jwt_outputs.attach(helper)
            helper.request_reconnect()  # the pipelines start again, the JWT one with them
        if plan.rewrite_files:
            await helper.rewrite_current()
        if plan.reconnect:
            helper.request_reconnect()
        return True

    async def on_sighup(self, sig: signal.Signals) -> int | None:
        await self.reload(sig.name)
        return None

    async def on_file_event(self) -> None:
        """The watcher saw the directory change: reload when the file's bytes changed."""
        digest = await asyncio.to_thread(file_digest, self.helper.cfg.source)
        if digest is None or digest == self.digest:
            return
        await self.reload("config file changed")

    async def sync_watcher(self, old: Config | None = None, new: Config | None = None) -> None:
        """Watch the file while watch_config is true (a reconfigure hook, and at start)."""
        want = self.helper.cfg.watch_config and bool(self.helper.cfg.source)
        if want and self.watcher is None:
            self.watcher = ConfigWatcher(self.helper.cfg.source, self.on_file_event)
            await self.watcher.start()
        elif not want and self.watcher is not None:
            watcher, self.watcher = self.watcher, None
            await watcher.stop()

    async def serve_watcher(self) -> int | None:
        """The service that owns the file watcher; stops it when the helper stops."""
        try:
            await self.sync_watcher()
            await asyncio.Event().wait()
        finally:
            if self.watcher is not None:
                self.watcher.stop_now()
        return None


class ConfigWatcher:
    """Tells `on_change` (on the loop) when the config's directory changed, debounced.

    The directory is watched, not the file: editors and config managers replace files by
    renaming a new one into place, and Kubernetes swaps a symlinked directory.
    """

    def __init__(self, path: str, on_change: Callable[[], Any]) -> None:
        self.path = Path(path).absolute()
        self.on_change = on_change
        self._loop: asyncio.AbstractEventLoop | None = None
        self._observer: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def directories(self) -> set[str]:
        found = {str(self.path.parent)}
        with contextlib.suppress(OSError):
            found.add(str(self.path.resolve().parent))
        return {d for d in found if os.path.isdir(d)}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError as exc:  # pragma: no cover - watchdog is a dependency
            log.error("watch_config: the watchdog package is missing (%s); not watching", exc)
            return

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return  # reads, ours included
                watcher._poke_threadsafe()

        observer = Observer()
        try:
            for directory in sorted(self.directories()):
                observer.schedule(Handler(), directory, recursive=False)
            observer.start()
        except OSError as exc:
            log.error("watch_config: cannot watch %s: %s; send SIGHUP to reload",
                      self.path.parent, exc)
            return
        self._observer = observer
        log.info("watch_config: watching %s for changes", self.path)

    def _poke_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._poke)

    def _poke(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_later(DEBOUNCE_SECONDS, self._fire)

    def _fire(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self.on_change())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        observer = self._halt()
        if observer is not None:
            await asyncio.to_thread(observer.join, 2.0)

    def stop_now(self) -> None:
        observer = self._halt()
        if observer is not None:
            observer.join(2.0)

    def _halt(self) -> Any:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            log.info("watch_config: no longer watching %s", self.path)
        return observer


def attach(helper: Helper) -> Reloader | None:
    """SIGHUP re-reads the config; watch_config re-reads it when it changes. Daemon mode."""
    if not helper.cfg.daemon_mode:
        return None
    reloader = Reloader(helper)
    helper.on_signal(signal.SIGHUP, reloader.on_sighup)
    helper.reconfigure_hooks.append(reloader.sync_watcher)
    helper.services.append(reloader.serve_watcher)
    return reloader
