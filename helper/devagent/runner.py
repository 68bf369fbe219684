"""`DevAgentThread`: a `DevAgent` on its own event loop in a daemon thread, for tests and
the demo.

Every call into the agent runs on the agent's loop, from whatever thread calls it, and is
bounded. Three typed calls do it: `call(fn)` runs `fn(agent)` there, `publish(fn)` also
waits until every open stream has sent what `fn` published, `wait(fn, timeout)` awaits
`fn(agent)` there. Reading any attribute of the agent through the thread, or calling
any of its methods, goes through them too (`thread.rotate()` is
`thread.publish(DevAgent.rotate)`): the agent declares which of its methods publish
(`helper.devagent.feed.publishes`), so nothing here names an agent method.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from helper.devagent.agent import DevAgent
from helper.devagent.feed import PUBLISHES, AgentOptions

T = TypeVar("T")


class DevAgentThread:
    """Runs a `DevAgent` on its own event loop in a daemon thread.

    Takes the agent, or the one `AgentOptions` (or socket path) to make it from. Use as a
    context manager: `__enter__` returns once the socket is listening. Every call is
    thread-safe and bounded by `call_timeout`; the ones that publish return only after
    every open stream has written the new message. Lists and dicts read from the agent
    are copies.
    """

    def __init__(
        self,
        agent: DevAgent | AgentOptions | str | os.PathLike[str],
        *,
        start_timeout: float = 10.0,
        call_timeout: float = 10.0,
    ) -> None:
        self.agent = agent if isinstance(agent, DevAgent) else DevAgent(agent)
        self.start_timeout = start_timeout
        self.call_timeout = call_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ----- calls into the agent -----

    def call(self, fn: Callable[[DevAgent], T]) -> T:
        """`fn(agent)` on the agent's loop (or right here when the loop is not running)."""
        if self._running_loop() is None:
            return fn(self.agent)

        async def call() -> T:
            return fn(self.agent)

        return self._submit(call(), self.call_timeout)

    def publish(self, fn: Callable[[DevAgent], T]) -> T:
        """`fn(agent)` on the agent's loop, then wait until every open stream has sent the
        current message."""

        async def call() -> T:
            result = fn(self.agent)
            await self.agent.flush(self.call_timeout)
            return result

        return self._submit(call(), self.call_timeout + 1.0)

    def wait(self, fn: Callable[[DevAgent], Coroutine[Any, Any, T]], timeout: float) -> T:
        """Await `fn(agent)` on the agent's loop; it must finish within `timeout` seconds
        (plus one, for the hand-over)."""
        return self._submit(fn(self.agent), timeout + 1.0)

    def __getattr__(self, name: str) -> Any:
        """The agent's attribute `name`, through `call`, `publish` or `wait`."""
        if name.startswith("_") or name == "agent":
            raise AttributeError(name)
        member = getattr(type(self.agent), name, None)
        if inspect.iscoroutinefunction(member):
            return functools.partial(self._await_method, member)
        if inspect.isfunction(member):
            run = self.publish if getattr(member, PUBLISHES, False) else self.call
            return functools.partial(_on_agent, run, member)
        return self.call(lambda agent: _copy(getattr(agent, name)))

    def _await_method(self, method: Callable[..., Coroutine[Any, Any, T]],
                      *args: Any, **kwargs: Any) -> T:
        """Await an agent coroutine method, bounded by its own `timeout` argument."""
        arguments = inspect.signature(method).bind(self.agent, *args, **kwargs)
        arguments.apply_defaults()
        timeout = float(arguments.arguments.get("timeout", self.call_timeout))
        return self.wait(lambda agent: method(agent, *args, **kwargs), timeout)

    # ----- lifecycle -----

    def __enter__(self) -> DevAgentThread:
        self._thread = threading.Thread(target=self._run, name="dev-agent", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.start_timeout):
            raise RuntimeError(f"dev-agent: not listening after {self.start_timeout:g} s")
        if self._error is not None:
            self._thread.join(self.start_timeout)
            raise RuntimeError(f"dev-agent: cannot start: {self._error}") from self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server (open calls are cancelled) and join the thread."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
        thread.join(self.call_timeout)
        self._thread = None
        if thread.is_alive():
            raise RuntimeError(f"dev-agent: thread still running after {self.call_timeout:g} s")
        if self._error is not None:
            raise RuntimeError(f"dev-agent: failed while stopping: {self._error}") from self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the caller by __enter__ / visible in logs
            self._error = self._error or exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.agent.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.agent.stop()

    def _running_loop(self) -> asyncio.AbstractEventLoop | None:
        if self._thread is None or not self._thread.is_alive() or self._loop is None:
            return None
        return self._loop

    def _submit(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        loop = self._running_loop()
        if loop is None:
            coro.close()
            raise RuntimeError("dev-agent: not running")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"dev-agent: call did not finish within {timeout:g} s") from None


def _on_agent(run: Callable[[Callable[[DevAgent], T]], T], method: Callable[..., T],
              *args: Any, **kwargs: Any) -> T:
    """`method(agent, *args, **kwargs)` through `run` (`DevAgentThread.call` or `publish`)."""
    return run(lambda agent: method(agent, *args, **kwargs))


def _copy(value: T) -> T:
    """A snapshot of a list or dict read from the agent (it changes on the agent's loop)."""
    if isinstance(value, (list, dict)):
        return value.copy()  # type: ignore[return-value]
    return value
