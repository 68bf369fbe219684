"""helper.workload.mailbox.Latest: the newest item wins."""

from __future__ import annotations

import asyncio

from helper.workload.mailbox import Latest


def test_get_returns_the_newest_and_counts_the_dropped() -> None:
    async def scenario() -> tuple[list[int], int, list[bool]]:
        box: Latest[int] = Latest()
        replaced = [box.put(1), box.put(2), box.put(3)]
        first = await box.get()
        replaced.append(box.put(4))
        second = await box.get()
        return [first, second], box.dropped, replaced

    assert asyncio.run(scenario()) == ([3, 4], 2, [False, True, True, False])


def test_get_waits_for_a_put() -> None:
    async def scenario() -> list[int | None]:
        box: Latest[int] = Latest()
        waiting = asyncio.Event()

        async def consumer() -> int:
            waiting.set()
            return await box.get()  # suspends here: nothing was put yet

        async def producer() -> None:
            await waiting.wait()
            box.put(7)

        return await asyncio.wait_for(asyncio.gather(consumer(), producer()), 5)

    assert asyncio.run(scenario()) == [7, None]
