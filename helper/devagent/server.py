"""An embedded SPIFFE Workload API server: the test double and the demo agent.

`DevAgent` runs on an asyncio loop (grpc.aio) and listens on a unix socket. Each open
stream waits on its own event and always sends the latest message, so nothing polls.
`DevAgentThread` runs a `DevAgent` on its own loop in a daemon thread and offers
thread-safe, bounded synchronous control methods for tests.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, NamedTuple, TypeVar

import grpc
import grpc.aio

from helper._proto import workload_pb2, workload_pb2_grpc
from helper.devagent.ca import DevCA, MintedSVID
from helper.errors import Refused
from helper.identity.jwks import parse_jwt_bundles
from helper.identity.jwt import validate_jwt_svid

logger = logging.getLogger("helper.devagent")

SECURITY_HEADER = "workload.spiffe.io"
SECURITY_HEADER_MISSING = "security header missing from request"
STOPPING = "dev-agent is stopping"
MAX_UNIX_PATH_BYTES = 107
STOP_WAIT = 2.0  # seconds stop() waits for open calls to finish before the server stops
STOP_GRACE = 1.0

DEFAULT_JWT_TTL = 300.0

M = TypeVar("M")
T = TypeVar("T")


class RawMessage(bytes):
    """Bytes a stream sends as one message exactly as they are, not a protobuf: how tests
    make the agent send a message that cannot be decoded (`DevAgent.push_raw`)."""


def _serialize(message: Any) -> bytes:
    if isinstance(message, RawMessage):
        return bytes(message)
    data: bytes = message.SerializeToString()
    return data


def _add_servicer(servicer: _Servicer, server: grpc.aio.Server) -> None:
    """The generated `add_SpiffeWorkloadAPIServicer_to_server`, with responses serialised
    by `_serialize` (so a `RawMessage` goes out as it is)."""
    stream, unary = grpc.unary_stream_rpc_method_handler, grpc.unary_unary_rpc_method_handler
    pb = workload_pb2
    methods = (("FetchX509SVID", stream, pb.X509SVIDRequest),
               ("FetchX509Bundles", stream, pb.X509BundlesRequest),
               ("FetchJWTSVID", unary, pb.JWTSVIDRequest),
               ("FetchJWTBundles", stream, pb.JWTBundlesRequest),
               ("ValidateJWTSVID", unary, pb.ValidateJWTSVIDRequest))
    handlers = {name: kind(getattr(servicer, name), request_deserializer=request.FromString,
                           response_serializer=_serialize)
                for name, kind, request in methods}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("SpiffeWorkloadAPI", handlers),))
    server.add_registered_method_handlers(  # type: ignore[attr-defined]  # not in grpc-stubs
        "SpiffeWorkloadAPI", handlers)


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
    """A Workload API server on a unix socket that mints X.509-SVIDs and JWT-SVIDs from a
    `DevCA`.

    Control methods (`rotate`, `rotate_ca`, `rotate_jwt_key`, `push`, `push_jwt_bundles`,
    `queue_jwt_svid_responses`, `fail_jwt_svids`, `set_federated`, `end_streams`,
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
        jwt_ttl: float = DEFAULT_JWT_TTL,
        tcp_port: int | None = None,
    ) -> None:
        self.socket_path = os.path.abspath(os.fspath(socket_path))
        # Also listen on 127.0.0.1:tcp_port (0: any free port, set once started).
        self.tcp_port = tcp_port
        self.jwt_ttl = jwt_ttl
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
        self._jwt_bundles = _Feed(self._jwt_bundles_response())
        self.calls = 0
        self.bundle_calls = 0
        self.jwt_calls = 0
        self.jwt_bundle_calls = 0
        self._jwt_responses: collections.deque[workload_pb2.JWTSVIDResponse] = (
            collections.deque())
        self._jwt_failure: tuple[grpc.StatusCode, str] | None = None
        self._active_calls = 0
        self._stopping = False
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
    def current_jwt_bundles(self) -> workload_pb2.JWTBundlesResponse:
        return self._jwt_bundles.current

    @property
    def svids(self) -> tuple[MintedSVID, ...]:
        """The SVIDs minted last, default first."""
        return self._svids

    @property
    def identities(self) -> list[tuple[str, str]]:
        """(SPIFFE ID, hint) of every SVID, default first."""
        return list(self._identities)

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
        _add_servicer(_Servicer(self), server)
        server.add_insecure_port(self.address)
        if self.tcp_port is not None:
            self.tcp_port = server.add_insecure_port(f"127.0.0.1:{self.tcp_port}")
        await server.start()
        self._server = server
        self._record_push()
        self._log_minted()
        self._schedule_rotation()

    async def stop(self, grace: float | None = STOP_GRACE) -> None:
        """Stop serving, cleanly: open streams are ended with status OK, new calls are
        refused with UNAVAILABLE, and open calls get up to `STOP_WAIT` seconds to finish
        before the server stops; calls still open `grace` seconds later are cancelled
        (grace 0 or None cancels at once, which makes gRPC send every client a GOAWAY
        "Cancelling all calls"). Ending calls ourselves, rather than having gRPC cancel
        them, keeps CancelledError tracebacks and GOAWAY logs out of the output."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._server is not None:
            self._stopping = True
            self.end_streams()
            with contextlib.suppress(TimeoutError):
                await self._wait_until(lambda: self._active_calls == 0, STOP_WAIT,
                                       "calls to finish")
            await self._server.stop(grace)
            self._server = None
            await _grpc_call_tasks_done(STOP_WAIT)
        _remove_stale_socket(Path(self.socket_path))

    # ----- control -----

    def rotate(self) -> workload_pb2.X509SVIDResponse:
        """Mint new SVIDs and push them to every open stream."""
        self._svids = self._mint_all()
        self._log_minted()
        return self._publish_state()

    def rotate_ca(self, *, reissue: bool = True) -> workload_pb2.X509SVIDResponse:
        """Rotate the own trust domain's CA (old root stays in the bundle) and its JWT key,
        then mint new SVIDs (`reissue`) or push the old ones with the new bundle only."""
        self.ca.rotate_ca()
        self.ca.rotate_jwt_key()
        logger.info("rotated CA and JWT key of %s", self.trust_domain)
        if reissue:
            return self.rotate()
        self._svids = tuple(dataclasses.replace(s, bundle=self.ca.bundle) for s in self._svids)
        return self._publish_state()

    def rotate_jwt_key(self) -> workload_pb2.JWTBundlesResponse:
        """A new JWT signing key (the old one stays in the JWKS); pushes the JWT bundles."""
        self.ca.rotate_jwt_key()
        logger.info("rotated JWT key of %s", self.trust_domain)
        self._publish_state()
        return self._jwt_bundles.current

    def push_jwt_bundles(self, response: workload_pb2.JWTBundlesResponse) -> None:
        """Push a raw JWTBundlesResponse to every open FetchJWTBundles stream."""
        self._jwt_bundles.publish(response)

    def queue_jwt_svid_responses(self, *responses: workload_pb2.JWTSVIDResponse) -> None:
        """Answer the next FetchJWTSVID calls with these raw responses, one each."""
        self._jwt_responses.extend(responses)

    def fail_jwt_svids(self, code: grpc.StatusCode | None, details: str = "") -> None:
        """Answer every FetchJWTSVID call with `code` until called again with None."""
        self._jwt_failure = None if code is None else (
            code, details or f"dev-agent: injected {code.name}")

    def push(self, response: workload_pb2.X509SVIDResponse) -> None:
        """Push a raw message to every open X.509 stream; new streams get it first too."""
        self._x509.publish(response)
        self._record_push()

    def push_raw(self, data: bytes, stream: str = "x509") -> None:
        """Send `data` as it is (not a protobuf) as the next message of every open stream of
        `stream` ("x509", "x509_bundles", "jwt_bundles"; new streams get it first too), or
        as the answer of the next FetchJWTSVID call ("jwt_svid")."""
        raw: Any = RawMessage(data)
        if stream == "jwt_svid":
            self._jwt_responses.append(raw)
            return
        feeds: dict[str, _Feed[Any]] = {"x509": self._x509, "x509_bundles": self._bundles,
                                        "jwt_bundles": self._jwt_bundles}
        feed = feeds[stream]
        feed.publish(raw)
        if stream == "x509":
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
        self._jwt_bundles.end_all()
        self._changed.set()

    async def wait_streams(self, n: int, timeout: float) -> None:
        """Wait until at least `n` FetchX509SVID streams are open."""
        await self._wait_until(lambda: self.open_streams >= n, timeout, f"{n} open stream(s)")

    async def flush(self, timeout: float) -> None:
        """Wait until every open stream has written the current message and every ended
        stream has finished."""
        await self._wait_until(
            lambda: self._x509.settled() and self._bundles.settled()
            and self._jwt_bundles.settled(),
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

    def _jwt_bundles_response(self) -> workload_pb2.JWTBundlesResponse:
        response = workload_pb2.JWTBundlesResponse()
        for ca in (self.ca, *self.federated_cas.values()):
            response.bundles[ca.id] = ca.jwks()
        return response

    def _publish_state(self) -> workload_pb2.X509SVIDResponse:
        response = self._x509_response()
        self.push(response)
        bundles = self._bundles_response()
        if bundles != self._bundles.current:
            self._bundles.publish(bundles)
        jwt_bundles = self._jwt_bundles_response()
        if jwt_bundles != self._jwt_bundles.current:
            self._jwt_bundles.publish(jwt_bundles)
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

    @contextlib.asynccontextmanager
    async def _call(self) -> AsyncIterator[None]:
        """Count an open call (stop() waits for them to finish)."""
        self._active_calls += 1
        try:
            yield
        finally:
            self._active_calls -= 1
            self._changed.set()

    async def _admit(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Refuse a call without the security header, or one due to fail on purpose."""
        if self._stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, STOPPING)
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
        async with self._call():
            self.calls += 1
            await self._admit(context)
            await self._stream(self._x509, context)

    async def fetch_x509_bundles(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        async with self._call():
            self.bundle_calls += 1
            await self._admit(context)
            await self._stream(self._bundles, context)

    async def fetch_jwt_bundles(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        async with self._call():
            self.jwt_bundle_calls += 1
            await self._admit(context)
            await self._stream(self._jwt_bundles, context)

    async def fetch_jwt_svid(
        self, request: workload_pb2.JWTSVIDRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> workload_pb2.JWTSVIDResponse:
        """A JWT-SVID per identity (or for the requested one), like SPIRE's agent."""
        async with self._call():
            self.jwt_calls += 1
            await self._admit(context)
            if self._jwt_failure is not None:
                await context.abort(*self._jwt_failure)
            if not request.audience:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "audience must be specified")
            if self._jwt_responses:
                return self._jwt_responses.popleft()
            identities = [(spiffe_id, hint) for spiffe_id, hint in self._identities
                          if not request.spiffe_id or spiffe_id == request.spiffe_id]
            if not identities:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
            response = workload_pb2.JWTSVIDResponse()
            for spiffe_id, hint in identities:
                token = self.ca.mint_jwt_svid(spiffe_id, list(request.audience), self.jwt_ttl)
                response.svids.add(spiffe_id=spiffe_id, svid=token, hint=hint)
            logger.info("minted %d JWT-SVID(s) for audience %s, expiring in %g s",
                        len(identities), ",".join(request.audience), self.jwt_ttl)
            return response

    async def validate_jwt_svid(
        self,
        request: workload_pb2.ValidateJWTSVIDRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> workload_pb2.ValidateJWTSVIDResponse:
        """Validate a JWT-SVID against the agent's current JWT bundles
        (helper.identity.jwt rules)."""
        async with self._call():
            await self._admit(context)
            if not request.audience or not request.svid:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "audience and svid must be specified")
            try:
                bundles = parse_jwt_bundles(dict(self._jwt_bundles.current.bundles))
                svid = validate_jwt_svid(request.svid, request.audience, bundles)
            except Refused as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                raise  # unreachable: abort raises
            response = workload_pb2.ValidateJWTSVIDResponse(spiffe_id=svid.spiffe_id)
            response.claims.update(dict(svid.claims))
            return response


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
    ) -> workload_pb2.JWTSVIDResponse:
        return await self._agent.fetch_jwt_svid(request, context)

    async def FetchJWTBundles(
        self,
        request: workload_pb2.JWTBundlesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        await self._agent.fetch_jwt_bundles(context)

    async def ValidateJWTSVID(
        self,
        request: workload_pb2.ValidateJWTSVIDRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> workload_pb2.ValidateJWTSVIDResponse:
        return await self._agent.validate_jwt_svid(request, context)


async def _grpc_call_tasks_done(timeout: float) -> None:
    """Wait (bounded) for grpc.aio's per-call bookkeeping tasks to finish.

    grpc.aio runs each call in a task (`_schedule_rpc_coro`) that outlives the handler
    until the call is closed. If the loop ends while one is pending, asyncio cancels it and
    grpc prints a bare CancelledError traceback. After the server has stopped these end
    within a few loop iterations; waiting for them here keeps the shutdown quiet.
    """
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()
               and getattr(t.get_coro(), "__name__", "") == "_schedule_rpc_coro"]
    if pending:
        await asyncio.wait(pending, timeout=timeout)


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
        jwt_ttl: float = DEFAULT_JWT_TTL,
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
            jwt_ttl=jwt_ttl,
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

    def rotate_ca(self, *, reissue: bool = True) -> workload_pb2.X509SVIDResponse:
        return self._publish(lambda: self.agent.rotate_ca(reissue=reissue))

    def rotate_jwt_key(self) -> workload_pb2.JWTBundlesResponse:
        return self._publish(self.agent.rotate_jwt_key)

    def push_jwt_bundles(self, response: workload_pb2.JWTBundlesResponse) -> None:
        self._publish(lambda: self.agent.push_jwt_bundles(response))

    def queue_jwt_svid_responses(self, *responses: workload_pb2.JWTSVIDResponse) -> None:
        self._read(lambda: self.agent.queue_jwt_svid_responses(*responses))

    def push_raw(self, data: bytes, stream: str = "x509") -> None:
        self._publish(lambda: self.agent.push_raw(data, stream))

    def fail_jwt_svids(self, code: grpc.StatusCode | None, details: str = "") -> None:
        self._read(lambda: self.agent.fail_jwt_svids(code, details))

    @property
    def current_jwt_bundles(self) -> workload_pb2.JWTBundlesResponse:
        return self._read(lambda: self.agent.current_jwt_bundles)

    @property
    def jwt_calls(self) -> int:
        return self._read(lambda: self.agent.jwt_calls)

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
