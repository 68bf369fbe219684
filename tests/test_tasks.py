import asyncio

import pytest

from helper.tasks import run_until_first


def test_first_result_wins_and_others_are_cancelled():
    cancelled = None

    async def scenario():
        nonlocal cancelled
        cancelled = asyncio.Event()

        async def slow():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        async def fast():
            return 7

        result = await run_until_first(slow(), fast())
        return result, cancelled.is_set()

    assert asyncio.run(scenario()) == (7, True)


def test_first_exception_is_raised():
    async def boom():
        raise RuntimeError("boom")

    async def forever():
        await asyncio.Event().wait()

    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(run_until_first(forever(), boom()))
