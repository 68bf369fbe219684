"""A one-slot mailbox: the newest item wins. No I/O.

Every Workload API X.509 response is a complete snapshot, so a consumer that falls behind
needs only the newest one; `Latest` keeps that one and drops the ones it replaces.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Latest(Generic[T]):
    def __init__(self) -> None:
        self._item: T | None = None
        self._full = asyncio.Event()
        self.dropped = 0  # items replaced before anyone took them

    def put(self, item: T) -> bool:
        """Store `item`; True when it replaced one nobody had taken yet."""
        replaced = self._full.is_set()
        self.dropped += replaced
        self._item = item
        self._full.set()
        return replaced

    async def get(self) -> T:
        """The newest item put since the last get (waits for one)."""
        await self._full.wait()
        self._full.clear()
        item, self._item = self._item, None
        assert item is not None
        return item
