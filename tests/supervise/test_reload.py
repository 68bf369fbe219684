"""The coalescing reloader: one reload in flight, one pending, bursts merged."""

from __future__ import annotations

import asyncio

from helper.supervise.reload_runner import ReloadRunner


class Recorder:
    """A reload action that records its runs and can be held until released."""

    def __init__(self) -> None:
        self.runs: list[frozenset[str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.release = asyncio.Event()
        self.release.set()
        self.started = asyncio.Event()
        self.done = asyncio.Event()

    async def __call__(self, parts: frozenset[str]) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.runs.append(parts)
        self.started.set()
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
            self.done.set()


async def until(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), 5)
    event.clear()


def test_a_burst_within_the_debounce_becomes_one_reload_with_every_part():
    async def scenario() -> list[frozenset[str]]:
        action = Recorder()
        reloader = ReloadRunner(action, debounce=0.05)
        for _ in range(50):
            reloader.trigger({"child"})
        reloader.trigger({"external"})
        await until(action.done)
        await reloader.close()
        return action.runs

    assert asyncio.run(scenario()) == [frozenset({"child", "external"})]


def test_triggers_during_a_reload_make_exactly_one_more_and_never_two_at_once():
    async def scenario() -> tuple[list[frozenset[str]], int]:
        action = Recorder()
        action.release.clear()
        reloader = ReloadRunner(action, debounce=0)
        reloader.trigger({"a"})
        await until(action.started)
        for _ in range(20):  # while the first is in flight
            reloader.trigger({"b"})
        action.release.set()
        await asyncio.wait_for(reloader.wait_idle(), 5)
        assert not reloader.busy
        await reloader.close()
        return action.runs, action.max_in_flight

    runs, max_in_flight = asyncio.run(scenario())
    assert runs == [frozenset({"a"}), frozenset({"b"})]
    assert max_in_flight == 1


def test_nothing_runs_without_a_trigger_or_with_no_parts():
    async def scenario() -> int:
        action = Recorder()
        reloader = ReloadRunner(action, debounce=0)
        reloader.trigger(set())
        assert not reloader.busy
        await reloader.close()
        return len(action.runs)

    assert asyncio.run(scenario()) == 0


def test_close_cancels_the_reload_in_flight_and_drops_the_pending_one():
    async def scenario() -> tuple[int, bool]:
        action = Recorder()
        action.release.clear()
        reloader = ReloadRunner(action, debounce=0)
        reloader.trigger({"a"})
        await until(action.started)
        reloader.trigger({"b"})
        await reloader.close()
        reloader.trigger({"c"})  # ignored once closed
        return len(action.runs), reloader.busy

    assert asyncio.run(scenario()) == (1, False)


def test_a_failing_reload_does_not_stop_the_next():
    async def scenario() -> int:
        calls = 0
        second = asyncio.Event()

        async def action(parts: frozenset[str]) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("reload went wrong")
            second.set()

        reloader = ReloadRunner(action, debounce=0)
        reloader.trigger({"a"})
        await asyncio.wait_for(reloader.wait_idle(), 5)
        reloader.trigger({"a"})
        await asyncio.wait_for(second.wait(), 5)
        await reloader.close()
        return calls

    assert asyncio.run(scenario()) == 2
