"""Signal capture: handlers only enqueue; the main task decides what a signal means.

As PID 1 the kernel drops every signal that has no handler, so each signal the helper
cares about gets one. The previous dispositions are restored on exit (as uvicorn does),
which matters when the helper runs inside a test process or `python -c`.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterable
from types import TracebackType

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


class SignalQueue:
    def __init__(self, signals: Iterable[signal.Signals]) -> None:
        self._signals = tuple(signals)
        self._queue: asyncio.Queue[signal.Signals] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> SignalQueue:
        self._loop = asyncio.get_running_loop()
        for sig in self._signals:
            self._loop.add_signal_handler(sig, self._queue.put_nowait, sig)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._loop is not None
        for sig in self._signals:
            self._loop.remove_signal_handler(sig)

    async def get(self) -> signal.Signals:
        return await self._queue.get()
