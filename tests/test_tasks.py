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
                await asyncio.Event().wait()  # until cancelled
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


def test_run_all_waits_for_every_coroutine():
    from helper.tasks import run_all

    done = []

    async def step(n, gate):
        await gate.wait()
        done.append(n)

    async def scenario():
        gates = [asyncio.Event() for _ in range(3)]
        runner = asyncio.ensure_future(run_all(*(step(n, g) for n, g in enumerate(gates))))
        for gate in reversed(gates):
            gate.set()
        await runner

    asyncio.run(scenario())
    assert sorted(done) == [0, 1, 2]


def test_run_all_raises_the_first_error_and_cancels_the_rest():
    from helper.tasks import run_all

    cancelled = []

    async def forever():
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def boom():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(run_all(forever(), boom()))
    assert cancelled == [True]
