"""An embedded SPIFFE Workload API server: the test double and the demo agent.

`DevAgent` runs on an asyncio loop (grpc.aio) and listens on a unix socket. Each open
stream waits on its own event and always sends the latest message, so nothing polls.
`DevAgentThread` runs a `DevAgent` on its own loop in a daemon thread and offers
thread-safe, bounded synchronous control methods for tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, NamedTuple, TypeVar

import grpc
import grpc.aio

from helper._proto import workload_pb2, workload_pb2_grpc
from helper.devagent.ca import DevCA, MintedSVID

logger = logging.getLogger("helper.devagent")

SECURITY_HEADER = "workload.spiffe.io"
SECURITY_HEADER_MISSING = "security header missing from request"
JWT_NOT_IMPLEMENTED = "JWT-SVIDs are not implemented by the dev agent yet"
MAX_UNIX_PATH_BYTES = 107

M = TypeVar("M")
T = TypeVar("T")


class PushTime(NamedTuple):
    """When a message was published: monotonic clock and wall clock, in nanoseconds."""

    monotonic_ns: int
    wall_ns: int


class _Subscriber(Generic[M]):
    """One open stream's view of a feed: what it has sent, and whether it must end."""

    def __init__(self, feed: _Feed[M]) -> None:
        self._feed = feed
        self._wake = asyncio.Event()
        self.sent_version = 0
        self.ended = False

    async def next(self) -> tuple[int, M] | None:
        """The latest message not yet sent (with its version), or None once ended."""
        while True:
            if self.ended:
                return None
            if self._feed.version > self.sent_version:
                return self._feed.version, self._feed.current
            self._wake.clear()
            await self._wake.wait()

    def wake(self) -> None:
        self._wake.set()

    def end(self) -> None:
        self.ended = True
        self._wake.set()


class _Feed(Generic[M]):
    """The latest message of one stream kind and the streams that follow it."""

    def __init__(self, initial: M) -> None:
        self.current = initial
        self.version = 1
        self.subscribers: set[_Subscriber[M]] = set()

    def publish(self, message: M) -> None:
        self.current = message
        self.version += 1
        for subscriber in self.subscribers:
            subscriber.wake()

    def end_all(self) -> None:
        for subscriber in self.subscribers:
            subscriber.end()

    @property
    def open_streams(self) -> int:
        return sum(1 for s in self.subscribers if not s.ended)

    def settled(self) -> bool:
        """True when every stream has sent the current message and ended ones are gone."""
        return all(not s.ended and s.sent_version >= self.version for s in self.subscribers)


class DevAgent:
    """A Workload API server on a unix socket that mints SVIDs from a `DevCA`.

    Control methods (`rotate`, `rotate_ca`, `push`, `set_federated`, `end_streams`,
    `fail_next`) are plain methods to be called on the agent's event loop; each publishes
    at once and returns. Publishing twice before a stream has written the first message
    sends that stream only the latest (every message is a complete snapshot);
    `await flush()` waits until every open stream has written the current message.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        trust_domain: str = "example.org",
        spiffe_id: str | None = None,
        hint: str = "",
        svids: Sequence[tuple[str, str]] = (),
        ttl: float = 3600.0,
        rotate_every: float | None = None,
        federate: Iterable[str] = (),
        intermediate: bool = False,
        dns_names: Sequence[str] = (),
    ) -> None:
        self.socket_path = os.path.abspath(os.fspath(socket_path))
        self.trust_domain = trust_domain
        self.spiffe_id = spiffe_id or f"spiffe://{trust_domain}/workload"
        self.ttl = ttl
        self.rotate_every = rotate_every
        self.dns_names = tuple(dns_names)
        self.ca = DevCA(trust_domain, intermediate=intermediate)
        self.federated_cas: dict[str, DevCA] = {td: DevCA(td) for td in federate}
        self._identities = [(self.spiffe_id, hint), *svids]
        self._svids = self._mint_all()
        self._x509 = _Feed(self._x509_response())
        self._bundles = _Feed(self._bundles_response())
        self.calls = 0
        self.bundle_calls = 0
        self.push_times: list[PushTime] = []
        self._fail_remaining = 0
        self._fail_status: tuple[grpc.StatusCode, str] = (grpc.StatusCode.UNKNOWN, "")
        self._changed = asyncio.Event()
        self._server: grpc.aio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def address(self) -> str:
        return "unix://" + self.socket_path

    @property
    def current(self) -> workload_pb2.X509SVIDResponse:
        """The last X509SVIDResponse published (what a new stream receives first)."""
        return self._x509.current

    @property
    def current_bundles(self) -> workload_pb2.X509BundlesResponse:
        return self._bundles.current

    @property
    def svids(self) -> tuple[MintedSVID, ...]:
        """The SVIDs minted last, default first."""
        return self._svids

    @property
    def push_count(self) -> int:
        """X.509 messages published, the initial one at start included."""
        return len(self.push_times)

    @property
    def open_streams(self) -> int:
        """FetchX509SVID streams currently open."""
        return self._x509.open_streams

    # ----- lifecycle -----

    async def start(self) -> None:
        """Listen on the socket and publish the initial message; raises OSError or
        RuntimeError when the socket cannot be bound."""
        path = Path(self.socket_path)
        if len(os.fsencode(self.socket_path)) > MAX_UNIX_PATH_BYTES:
            raise ValueError(f"socket path is longer than {MAX_UNIX_PATH_BYTES} bytes: {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_socket(path)
        server = grpc.aio.server()
        workload_pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server(_Servicer(self), server)
        server.add_insecure_port(self.address)
        await server.start()
        self._server = server
        self._record_push()
        self._log_minted()
        self._schedule_rotation()

    async def stop(self, grace: float | None = 0) -> None:
        """Stop serving (open calls are cancelled after `grace` seconds)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        _remove_stale_socket(Path(self.socket_path))

    # ----- control -----

    def rotate(self) -> workload_pb2.X509SVIDResponse:
        """Mint new SVIDs and push them to every open stream."""
        self._svids = self._mint_all()
        self._log_minted()
        return self._publish_state()

    def rotate_ca(self) -> workload_pb2.X509SVIDResponse:
        """Rotate the own trust domain's CA (old root stays in the bundle), then rotate."""
        self.ca.rotate_ca()
        logger.info("rotated CA of %s", self.trust_domain)
        return self.rotate()

    def push(self, response: workload_pb2.X509SVIDResponse) -> None:
        """Push a raw message to every open X.509 stream; new streams get it first too."""
        self._x509.publish(response)
        self._record_push()

    def set_federated(self, trust_domains: Iterable[str]) -> workload_pb2.X509SVIDResponse:
        """Federate with exactly these trust domains (keeping existing CAs) and push."""
        self.federated_cas = {td: self.federated_cas.get(td) or DevCA(td) for td in trust_domains}
        return self._publish_state()

    def fail_next(self, n: int, code: grpc.StatusCode, details: str = "") -> None:
        """Answer the next `n` calls (of any method) with `code` before any message."""
        self._fail_remaining = n
        self._fail_status = (code, details or f"dev-agent: injected {code.name}")

    def end_streams(self) -> None:
        """End every open stream with status OK."""
        self._x509.end_all()
        self._bundles.end_all()
        self._changed.set()

    async def wait_streams(self, n: int, timeout: float) -> None:
        """Wait until at least `n` FetchX509SVID streams are open."""
        await self._wait_until(lambda: self.open_streams >= n, timeout, f"{n} open stream(s)")

    async def flush(self, timeout: float) -> None:
        """Wait until every open stream has written the current message and every ended
        stream has finished."""
        await self._wait_until(
            lambda: self._x509.settled() and self._bundles.settled(),
            timeout,
            "streams to send the current message",
        )

    # ----- internals -----

    def _mint_all(self) -> tuple[MintedSVID, ...]:
        return tuple(
            self.ca.mint_svid(spiffe_id, self.ttl, hint, dns_names=self.dns_names)
            for spiffe_id, hint in self._identities
        )

    def _x509_response(self) -> workload_pb2.X509SVIDResponse:
        response = workload_pb2.X509SVIDResponse()
        for svid in self._svids:
            response.svids.add(
                spiffe_id=svid.spiffe_id,
                x509_svid=svid.chain_der(),
                x509_svid_key=svid.key,
                bundle=svid.bundle_der(),
                hint=svid.hint,
            )
        for ca in self.federated_cas.values():
            response.federated_bundles[ca.id] = ca.bundle_der()
        return response

    def _bundles_response(self) -> workload_pb2.X509BundlesResponse:
        response = workload_pb2.X509BundlesResponse()
        for ca in (self.ca, *self.federated_cas.values()):
            response.bundles[ca.id] = ca.bundle_der()
        return response

    def _publish_state(self) -> workload_pb2.X509SVIDResponse:
        response = self._x509_response()
        self.push(response)
        bundles = self._bundles_response()
        if bundles != self._bundles.current:
            self._bundles.publish(bundles)
        return response

    def _record_push(self) -> None:
        self.push_times.append(PushTime(time.monotonic_ns(), time.time_ns()))

    def _log_minted(self) -> None:
        for svid in self._svids:
            logger.info(
                "minted X.509-SVID %s serial %x expires %s",
                svid.spiffe_id,
                svid.serial,
                svid.expires.isoformat(),
            )

    def _schedule_rotation(self) -> None:
        if self.rotate_every is not None and self._server is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.rotate_every, self._rotate_on_timer)

    def _rotate_on_timer(self) -> None:
        self.rotate()
        self._schedule_rotation()

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"dev-agent: no {what} after {timeout:g} s")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def _admit(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Refuse a call without the security header, or one due to fail on purpose."""
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get(SECURITY_HEADER) != "true":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, SECURITY_HEADER_MISSING)
        if self._fail_remaining > 0:
            self._fail_remaining -= 1
            code, details = self._fail_status
            await context.abort(code, details)

    async def _stream(self, feed: _Feed[M], context: grpc.aio.ServicerContext[Any, M]) -> None:
        subscriber = _Subscriber(feed)
        feed.subscribers.add(subscriber)
        self._changed.set()
        try:
            while (item := await subscriber.next()) is not None:
                version, message = item
                await context.write(message)
                subscriber.sent_version = version
                self._changed.set()
        finally:
            feed.subscribers.discard(subscriber)
            self._changed.set()

    async def fetch_x509_svid(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.calls += 1
        await self._admit(context)
        await self._stream(self._x509, context)

    async def fetch_x509_bundles(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.bundle_calls += 1
        await self._admit(context)
        await self._stream(self._bundles, context)

    async def not_implemented(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await self._admit(context)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, JWT_NOT_IMPLEMENTED)


class _Servicer(workload_pb2_grpc.SpiffeWorkloadAPIServicer):  # type: ignore[misc]
    """Maps the generated service's methods (names fixed by the proto) onto a `DevAgent`."""

    def __init__(self, agent: DevAgent) -> None:
        self._agent = agent

    async def FetchX509SVID(
        self, request: workload_pb2.X509SVIDRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        await self._agent.fetch_x509_svid(context)

    async def FetchX509Bundles(
        self,
        request: workload_pb2.X509BundlesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        await self._agent.fetch_x509_bundles(context)

    async def FetchJWTSVID(
        self, request: workload_pb2.JWTSVIDRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        await self._agent.not_implemented(context)

    async def FetchJWTBundles(
        self,
        request: workload_pb2.JWTBundlesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        await self._agent.not_implemented(context)

    async def ValidateJWTSVID(
        self,
        request: workload_pb2.ValidateJWTSVIDRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        await self._agent.not_implemented(context)


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file left behind; refuse to remove anything else."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"dev-agent: {path} exists and is not a socket")
    path.unlink(missing_ok=True)


class DevAgentThread:
    """Runs a `DevAgent` on its own event loop in a daemon thread.

    Use as a context manager: `__enter__` returns once the socket is listening. Every
    control method is thread-safe and bounded by `call_timeout`; the ones that publish
    return only after every open stream has written the new message.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        trust_domain: str = "example.org",
        spiffe_id: str | None = None,
        hint: str = "",
        svids: Sequence[tuple[str, str]] = (),
        ttl: float = 3600.0,
        rotate_every: float | None = None,
        federate: Iterable[str] = (),
        intermediate: bool = False,
        dns_names: Sequence[str] = (),
        start_timeout: float = 10.0,
        call_timeout: float = 10.0,
    ) -> None:
        self.agent = DevAgent(
            socket_path,
            trust_domain=trust_domain,
            spiffe_id=spiffe_id,
            hint=hint,
            svids=svids,
            ttl=ttl,
            rotate_every=rotate_every,
            federate=federate,
            intermediate=intermediate,
            dns_names=dns_names,
        )
        self.start_timeout = start_timeout
        self.call_timeout = call_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ----- what tests read -----

    @property
    def socket_path(self) -> str:
        return self.agent.socket_path

    @property
    def address(self) -> str:
        return self.agent.address

    @property
    def spiffe_id(self) -> str:
        return self.agent.spiffe_id

    @property
    def ca(self) -> DevCA:
        return self.agent.ca

    @property
    def federated_cas(self) -> dict[str, DevCA]:
        return self._read(lambda: dict(self.agent.federated_cas))

    @property
    def current(self) -> workload_pb2.X509SVIDResponse:
        return self._read(lambda: self.agent.current)

    @property
    def svids(self) -> tuple[MintedSVID, ...]:
        return self._read(lambda: self.agent.svids)

    @property
    def push_count(self) -> int:
        return self._read(lambda: self.agent.push_count)

    @property
    def push_times(self) -> list[PushTime]:
        return self._read(lambda: list(self.agent.push_times))

    @property
    def calls(self) -> int:
        return self._read(lambda: self.agent.calls)

    @property
    def open_streams(self) -> int:
        return self._read(lambda: self.agent.open_streams)

    # ----- control -----

    def rotate(self) -> workload_pb2.X509SVIDResponse:
        return self._publish(self.agent.rotate)

    def rotate_ca(self) -> workload_pb2.X509SVIDResponse:
        return self._publish(self.agent.rotate_ca)

    def push(self, response: workload_pb2.X509SVIDResponse) -> None:
        self._publish(lambda: self.agent.push(response))

    def set_federated(self, trust_domains: Iterable[str]) -> workload_pb2.X509SVIDResponse:
        tds = list(trust_domains)
        return self._publish(lambda: self.agent.set_federated(tds))

    def end_streams(self) -> None:
        self._publish(self.agent.end_streams)

    def fail_next(self, n: int, code: grpc.StatusCode, details: str = "") -> None:
        self._read(lambda: self.agent.fail_next(n, code, details))

    def wait_streams(self, n: int, timeout: float = 10.0) -> None:
        """Block until at least `n` FetchX509SVID streams are open; TimeoutError if not."""
        self._submit(self.agent.wait_streams(n, timeout), timeout + 1.0)

    def flush(self, timeout: float = 10.0) -> None:
        self._submit(self.agent.flush(timeout), timeout + 1.0)

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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
            await self.agent.stop(grace=0)

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

    def _read(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the agent's loop (or directly once the agent has stopped)."""
        if self._running_loop() is None:
            return fn()

        async def call() -> T:
            return fn()

        return self._submit(call(), self.call_timeout)

    def _publish(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the loop, then wait until every open stream has sent the result."""

        async def call() -> T:
            result = fn()
            await self.agent.flush(self.call_timeout)
            return result

        return self._submit(call(), self.call_timeout + 1.0)
