"""Reloads never pile up: at most one reload action in flight and one pending.

``trigger()`` asks for a reload. The first trigger waits ``debounce`` seconds (so a burst
of rotations becomes one reload), then runs the action, which reads the files on disk
at that moment: the last ones. Triggers that arrive while the action runs make exactly
one more run after it; nothing runs when nothing was triggered.

A trigger names the *parts* it wants reloaded (for example the child, or the external
process); the parts of coalesced triggers are merged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

log = logging.getLogger("spiffe_helper")

ReloadAction = Callable[[frozenset[str]], Awaitable[None]]


class ReloadRunner:
    def __init__(self, action: ReloadAction, debounce: float) -> None:
        self.action = action
        self.debounce = debounce
        self._pending: set[str] = set()
        self._task: asyncio.Future[None] | None = None
        self._closed = False
        self.runs = 0

    def trigger(self, parts: Iterable[str]) -> None:
        if self._closed:
            return
        self._pending.update(parts)
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._drain())

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait_idle(self) -> None:
        """Return once no reload is in flight or pending."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _drain(self) -> None:
        while self._pending:
            if self.debounce > 0:
                await asyncio.sleep(self.debounce)
            parts, self._pending = frozenset(self._pending), set()
            self.runs += 1
            try:
                await self.action(parts)
            except Exception:  # a failed reload never stops the helper
                log.exception("reload failed")

    async def close(self) -> None:
        """Drop what is pending and cancel the reload in flight (waiting for it to end)."""
        self._closed = True
        self._pending.clear()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
