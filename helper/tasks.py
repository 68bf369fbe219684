"""Run a set of long-lived coroutines until the first one ends (Python 3.10 has no TaskGroup).

The first task to finish decides the outcome: its result is returned or its exception
raised; every other task is cancelled and awaited, so nothing is left running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def run_until_first(*coros: Coroutine[Any, Any, T]) -> T:
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = next(t for t in tasks if t in done)
    return first.result()


async def run_all(*coros: Coroutine[Any, Any, Any]) -> None:
    """Run coroutines concurrently until all are done; the first to raise cancels (and
    awaits) the others, then its exception propagates."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
