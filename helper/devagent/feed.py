"""What the dev-agent hands out: its SVIDs, bundles and JWTs, how they rotate, and the
streams that follow them.

`Feed` holds the agent's state (`AgentOptions`, the CAs, the SVIDs minted last) and one
`Latest` per server stream (X.509-SVIDs, X.509 bundles, JWT bundles). Each open stream
waits on its own event and always sends the latest message, so nothing polls; publishing
twice before a stream has written the first message sends that stream only the latest
(every message is a complete snapshot). Nothing here knows gRPC: `DevAgent`
(helper.devagent.agent) serves a `Feed` on a socket.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from helper._proto import workload_pb2
from helper.devagent.ca import DevCA, MintedSVID

logger = logging.getLogger("helper.devagent")

DEFAULT_JWT_TTL = 300.0
PUBLISHES = "_devagent_publishes"

M = TypeVar("M")
F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class AgentOptions:
    """Everything a dev-agent is made of: where it listens and what it hands out.

    The one declaration of the agent's options: `DevAgent`, `DevAgentThread` and the
    `dev-agent` CLI all take one of these. Sequences are kept as tuples."""

    socket_path: str | os.PathLike[str]
    trust_domain: str = "example.org"
    spiffe_id: str | None = None  # default: spiffe://<trust_domain>/workload
    hint: str = ""
    svids: Sequence[tuple[str, str]] = ()  # (SPIFFE ID, hint) of extra SVIDs
    ttl: float = 3600.0
    rotate_every: float | None = None  # mint and push new SVIDs every so many seconds
    federate: Sequence[str] = ()
    intermediate: bool = False
    dns_names: Sequence[str] = ()
    jwt_ttl: float = DEFAULT_JWT_TTL
    tcp_port: int | None = None  # also listen on 127.0.0.1 (0: any free port)

    def __post_init__(self) -> None:
        for name in ("svids", "federate", "dns_names"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


class RawMessage(bytes):
    """Bytes a stream sends as one message exactly as they are, not a protobuf: how tests
    make the agent send a message that cannot be decoded (`Feed.push_raw`)."""


class PushTime(NamedTuple):
    """When a message was published: monotonic clock and wall clock, in nanoseconds."""

    monotonic_ns: int
    wall_ns: int


def publishes(method: F) -> F:
    """Mark a control method that publishes to the streams: a caller on another thread
    (`DevAgentThread`) gets its result once every open stream has sent it."""
    setattr(method, PUBLISHES, True)
    return method


class Subscriber(Generic[M]):
    """One open stream's view of a `Latest`: what it has sent, and whether it must end."""

    def __init__(self, latest: Latest[M]) -> None:
        self._latest = latest
        self._wake = asyncio.Event()
        self.sent_version = 0
        self.ended = False

    async def next(self) -> tuple[int, M] | None:
        """The latest message not yet sent (with its version), or None once ended."""
        while True:
            if self.ended:
                return None
            if self._latest.version > self.sent_version:
                return self._latest.version, self._latest.current
            self._wake.clear()
            await self._wake.wait()

    def wake(self) -> None:
        self._wake.set()

    def end(self) -> None:
        self.ended = True
        self._wake.set()


class Latest(Generic[M]):
    """The latest message of one stream kind and the streams that follow it."""

    def __init__(self, initial: M) -> None:
        self.current = initial
        self.version = 1
        self.subscribers: set[Subscriber[M]] = set()

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


class Feed:
    """The SVIDs, bundles and JWTs of one dev-agent, minted from a `DevCA`, and the streams
    that follow them.

    Control methods (`rotate`, `rotate_ca`, `rotate_jwt_key`, `push`, `push_raw`,
    `push_jwt_bundles`, `queue_jwt_svid_responses`, `set_federated`, `end_streams`) are
    plain methods to be called on the event loop; each publishes at once and returns.
    `await flush()` waits until every open stream has written the current message.
    """

    def __init__(self, options: AgentOptions) -> None:
        self.options = options
        self.trust_domain = options.trust_domain
        self.spiffe_id = options.spiffe_id or f"spiffe://{options.trust_domain}/workload"
        self.ca = DevCA(options.trust_domain, intermediate=options.intermediate)
        self.federated_cas: dict[str, DevCA] = {td: DevCA(td) for td in options.federate}
        self._identities = [(self.spiffe_id, options.hint), *options.svids]
        self._svids = self._mint_all()
        self._x509 = Latest(self._x509_response())
        self._bundles = Latest(self._bundles_response())
        self._jwt_bundles = Latest(self._jwt_bundles_response())
        self._jwt_responses: collections.deque[workload_pb2.JWTSVIDResponse] = (
            collections.deque())
        self.push_times: list[PushTime] = []
        self._changed = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None

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

    # ----- control -----

    @publishes
    def rotate(self) -> workload_pb2.X509SVIDResponse:
        """Mint new SVIDs and push them to every open stream."""
        self._svids = self._mint_all()
        self._log_minted()
        return self._publish_state()

    @publishes
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

    @publishes
    def rotate_jwt_key(self) -> workload_pb2.JWTBundlesResponse:
        """A new JWT signing key (the old one stays in the JWKS); pushes the JWT bundles."""
        self.ca.rotate_jwt_key()
        logger.info("rotated JWT key of %s", self.trust_domain)
        self._publish_state()
        return self._jwt_bundles.current

    @publishes
    def push_jwt_bundles(self, response: workload_pb2.JWTBundlesResponse) -> None:
        """Push a raw JWTBundlesResponse to every open FetchJWTBundles stream."""
        self._jwt_bundles.publish(response)

    def queue_jwt_svid_responses(self, *responses: workload_pb2.JWTSVIDResponse) -> None:
        """Answer the next FetchJWTSVID calls with these raw responses, one each."""
        self._jwt_responses.extend(responses)

    @publishes
    def push(self, response: workload_pb2.X509SVIDResponse) -> None:
        """Push a raw message to every open X.509 stream; new streams get it first too."""
        self._x509.publish(response)
        self._record_push()

    @publishes
    def push_raw(self, data: bytes, stream: str = "x509") -> None:
        """Send `data` as it is (not a protobuf) as the next message of every open stream of
        `stream` ("x509", "x509_bundles", "jwt_bundles"; new streams get it first too), or
        as the answer of the next FetchJWTSVID call ("jwt_svid")."""
        raw: Any = RawMessage(data)
        if stream == "jwt_svid":
            self._jwt_responses.append(raw)
            return
        streams: dict[str, Latest[Any]] = {"x509": self._x509, "x509_bundles": self._bundles,
                                           "jwt_bundles": self._jwt_bundles}
        streams[stream].publish(raw)
        if stream == "x509":
            self._record_push()

    @publishes
    def set_federated(self, trust_domains: Iterable[str]) -> workload_pb2.X509SVIDResponse:
        """Federate with exactly these trust domains (keeping existing CAs) and push."""
        self.federated_cas = {td: self.federated_cas.get(td) or DevCA(td) for td in trust_domains}
        return self._publish_state()

    @publishes
    def end_streams(self) -> None:
        """End every open stream with status OK."""
        self._x509.end_all()
        self._bundles.end_all()
        self._jwt_bundles.end_all()
        self._changed.set()

    async def wait_streams(self, n: int, timeout: float = 10.0) -> None:
        """Wait until at least `n` FetchX509SVID streams are open."""
        await self._wait_until(lambda: self.open_streams >= n, timeout, f"{n} open stream(s)")

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until every open stream has written the current message and every ended
        stream has finished."""
        await self._wait_until(
            lambda: self._x509.settled() and self._bundles.settled()
            and self._jwt_bundles.settled(),
            timeout,
            "streams to send the current message",
        )

    # ----- what streams and calls receive -----

    async def follow(self, latest: Latest[M], write: Callable[[M], Awaitable[None]]) -> None:
        """Write every new message of `latest` with `write` until the stream is ended."""
        subscriber = Subscriber(latest)
        latest.subscribers.add(subscriber)
        self._changed.set()
        try:
            while (item := await subscriber.next()) is not None:
                version, message = item
                await write(message)
                subscriber.sent_version = version
                self._changed.set()
        finally:
            latest.subscribers.discard(subscriber)
            self._changed.set()

    def jwt_svid_response(
        self, audience: Sequence[str], spiffe_id: str = ""
    ) -> workload_pb2.JWTSVIDResponse | None:
        """The next queued raw response, else a JWT-SVID per identity (or for `spiffe_id`),
        like SPIRE's agent; None when no identity matches."""
        if self._jwt_responses:
            return self._jwt_responses.popleft()
        identities = [(sid, hint) for sid, hint in self._identities
                      if not spiffe_id or sid == spiffe_id]
        if not identities:
            return None
        ttl = self.options.jwt_ttl
        response = workload_pb2.JWTSVIDResponse()
        for sid, hint in identities:
            response.svids.add(spiffe_id=sid, svid=self.ca.mint_jwt_svid(sid, audience, ttl),
                               hint=hint)
        logger.info("minted %d JWT-SVID(s) for audience %s, expiring in %g s",
                    len(identities), ",".join(audience), ttl)
        return response

    # ----- rotation on a timer -----

    def began_serving(self) -> None:
        """Record and log the initial message; from now on rotate every `rotate_every`
        seconds (on the running loop)."""
        self._record_push()
        self._log_minted()
        self._schedule_rotation()

    def stop_rotation(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule_rotation(self) -> None:
        if self.options.rotate_every is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.options.rotate_every, self._rotate_on_timer)

    def _rotate_on_timer(self) -> None:
        self.rotate()
        self._schedule_rotation()

    # ----- internals -----

    def _mint_all(self) -> tuple[MintedSVID, ...]:
        return tuple(
            self.ca.mint_svid(spiffe_id, self.options.ttl, hint,
                              dns_names=self.options.dns_names)
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
        cas = (self.ca, *self.federated_cas.values())
        return workload_pb2.X509BundlesResponse(bundles={ca.id: ca.bundle_der() for ca in cas})

    def _jwt_bundles_response(self) -> workload_pb2.JWTBundlesResponse:
        cas = (self.ca, *self.federated_cas.values())
        return workload_pb2.JWTBundlesResponse(bundles={ca.id: ca.jwks() for ca in cas})

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
