"""``watch_config = true``: the config file is read again when it changes.

`ConfigWatcher` is a feature (helper.features): while ``watch_config`` is true it watches
the config file's directory with watchdog and, when the file's bytes changed, asks for a
reload through the `request_reload` callable it was given (the core's `reload`, the same
one SIGHUP runs). It only asks: reading, validating and applying the config is the
core's (helper/app.py). Daemon mode only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helper.config import Config
from helper.features import Feature, RequestReload
from helper.safefile import UnreadableFile, read_small_file

log = logging.getLogger("spiffe_helper.reload")

DEBOUNCE_SECONDS = 0.2
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


class ConfigWatcher(Feature):
    """Asks for a reload when the config file's bytes changed, while watch_config is true."""

    def __init__(self, cfg: Config, request_reload: RequestReload) -> None:
        self.cfg = cfg
        self.request_reload = request_reload
        self.digest = file_digest(cfg.source) if cfg.source else None
        self.watch: DirectoryWatch | None = None

    async def serve(self) -> int | None:
        """Owns the file watcher; stops it when the helper stops."""
        try:
            await self._sync()
            await asyncio.Event().wait()
        finally:
            if self.watch is not None:
                self.watch.stop_now()
        return None

    async def reloading(self) -> None:
        """Any reload (SIGHUP too) reads the file: its bytes are the ones in force now,
        and the watcher's own event for the same edit reloads nothing more."""
        if not self.cfg.source:
            return
        try:
            data = await asyncio.to_thread(read_config_bytes, self.cfg.source)
        except UnreadableFile:
            return  # the reload is refused: the digest in force stays
        except OSError:
            self.digest = None
            return
        self.digest = hashlib.sha256(data).digest()

    async def reconfigure(self, old: Config, new: Config) -> None:
        self.cfg = new
        await self._sync()

    async def on_file_event(self) -> None:
        """The directory changed: reload when the file's bytes changed."""
        digest = await asyncio.to_thread(file_digest, self.cfg.source)
        if digest is None or digest == self.digest:
            return
        await self.request_reload("config file changed")

    async def _sync(self) -> None:
        """Watch the file while watch_config is true."""
        want = self.cfg.watch_config and bool(self.cfg.source)
        if want and self.watch is None:
            self.watch = DirectoryWatch(self.cfg.source, self.on_file_event)
            await self.watch.start()
        elif not want and self.watch is not None:
            watch, self.watch = self.watch, None
            await watch.stop()


class DirectoryWatch:
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
