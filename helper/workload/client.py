"""The Workload API client: the one network edge of the helper.

`WorkloadClient` opens calls on a grpclib channel (pure-Python gRPC on asyncio and the
`h2` state machine: no threads, no timers while a stream is idle) with the
`workload.spiffe.io: true` header every SPIFFE agent requires. Messages arrive as raw
bytes and are decoded here, so every failure has one shape: `WorkloadAPIError` with a
gRPC status code. `watch()` turns one-shot streams into an endless sequence of
messages, re-opening streams that end and retrying transient errors with backoff, and
raising the final ones (shared/README section 1).

What the client promises (each tested against the grpcio dev-agent and a raw HTTP/2
server in tests/workload/test_workload.py and tests/reliability/test_hostile_server.py):

- connecting (socket connect plus the agent's HTTP/2 SETTINGS frame) takes at most
  `CONNECT_TIMEOUT`, else UNAVAILABLE; a connection that fails is replaced on the next
  call, so every retry is a real attempt;
- GOAWAY, RST_STREAM and EOF mid-stream are UNAVAILABLE; trailers-only responses carry
  their status; a stream or response without `grpc-status` is UNKNOWN;
- a message over `MAX_MESSAGE_BYTES` is refused before it is buffered;
- a message that cannot be decoded (not protobuf, compressed without negotiation,
  truncated) is refused: `RefusedMessage` (INTERNAL, as grpc-go reports it), and the
  stream is restarted with backoff;
- HTTP/2 flow-control windows are acknowledged as messages are read, so a stream of any
  length never stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import h2.exceptions
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from grpclib.client import Channel, Handler
from grpclib.client import Stream as GrpcStream
from grpclib.config import Configuration
from grpclib.const import Cardinality, Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.exceptions import ProtocolError as GrpclibProtocolError
from grpclib.protocol import H2Protocol

from helper._proto import workload_pb2
from helper.errors import HelperError
from helper.workload.address import Address
from helper.workload.backoff import Backoff

log = logging.getLogger("spiffe_helper.workload")

SECURITY_HEADER = (("workload.spiffe.io", "true"),)

# A bug or a missing feature on one side: reported, never retried.
FINAL_CODES = frozenset({Status.INVALID_ARGUMENT, Status.UNIMPLEMENTED})

# A unary call (FetchJWTSVID) that takes longer than this failed (and is retried).
UNARY_TIMEOUT = 30.0
# Socket connect plus the agent's HTTP/2 SETTINGS frame; a timer exists only meanwhile.
CONNECT_TIMEOUT = 10.0
# The largest message accepted. gRPC's usual default is 4 MiB; an X509SVIDResponse with
# 1000 federated bundles is about 0.7 MiB, so 16 MiB leaves room for very large
# federations while a hostile length prefix still cannot make the helper buffer gigabytes.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

_X509_SVID = "/SpiffeWorkloadAPI/FetchX509SVID"
_JWT_BUNDLES = "/SpiffeWorkloadAPI/FetchJWTBundles"
_JWT_SVID = "/SpiffeWorkloadAPI/FetchJWTSVID"

M = TypeVar("M")
T = TypeVar("T")
P = TypeVar("P", bound=ProtoMessage)


class WorkloadAPIError(HelperError):
    """A Workload API call failed. `final` errors must not be retried."""

    def __init__(self, code: Status, details: str) -> None:
        self.code = code
        self.details = details
        self.final = code in FINAL_CODES
        super().__init__(f"{code.name}: {details}" if details else code.name)


class RefusedMessage(WorkloadAPIError):
    """A message arrived but could not be used (not decodable, or too large). Counted as
    a refused message under `rule`; the stream is restarted with backoff."""

    def __init__(self, rule: str, details: str, code: Status = Status.INTERNAL) -> None:
        self.rule = rule
        super().__init__(code, details)


class _RawCodec(CodecBase):
    """Requests are protobuf; replies are read as bytes by `_receive` (never by grpclib)."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        data: bytes = message.SerializeToString()
        return data

    def decode(self, data: bytes, message_type: Any) -> Any:  # pragma: no cover - unused
        return data


class _Protocol(H2Protocol):
    """grpclib's protocol, noting when the agent first sent anything (its SETTINGS)."""

    answered: asyncio.Event

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.answered = asyncio.Event()
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.answered.set()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not hasattr(self.processor, "processors"):
            # already closed for a reason (a GOAWAY, an HTTP/2 protocol error): keep that
            # reason for the calls it ended rather than a bare "Connection lost"
            return
        super().connection_lost(exc)


class _Channel(Channel):
    def _protocol_factory(self) -> H2Protocol:
        return _Protocol(Handler(), self._config, self._h2_config)


# No keepalive pings (grpclib's client default): an idle stream costs no wakeups.
_CONFIG = Configuration()


def _decode(data: bytes, message_type: type[P], what: str) -> P:
    try:
        return message_type.FromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        reason = _one_line(exc).removeprefix(
            f"Error parsing message with type '{message_type.DESCRIPTOR.full_name}': ")
        raise RefusedMessage("undecodable_message",
                             f"{what}: a message that is not a valid "
                             f"{message_type.DESCRIPTOR.name} ({len(data)} bytes): "
                             f"{reason}") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


async def _isolated(step: Coroutine[Any, Any, T]) -> T:
    """Run one grpclib step in a task of its own.

    grpclib wakes a step blocked on a stream that was terminated (RST_STREAM, GOAWAY, a
    lost connection) by cancelling the task that runs it, then raises
    StreamTerminatedError in place of the CancelledError. Run in the caller's task, that
    could swallow a cancellation meant for the caller (a shutdown arriving at the same
    moment) and leave a stray cancel request on it; in a task of its own it cannot. The
    caller's own cancellation cancels the step and is re-raised."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await task
        raise


@contextmanager
def _errors() -> Iterator[None]:
    """Every failure of a call as WorkloadAPIError."""
    try:
        yield
    except WorkloadAPIError:
        raise
    except GRPCError as exc:
        raise WorkloadAPIError(exc.status, " ".join((exc.message or "").split())) from None
    except StreamTerminatedError as exc:
        raise WorkloadAPIError(Status.UNAVAILABLE, _one_line(exc)) from None
    except (ConnectionError, OSError, EOFError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else _one_line(exc)
        raise WorkloadAPIError(Status.UNAVAILABLE, f"cannot reach the agent: {text}") from None
    except (GrpclibProtocolError, h2.exceptions.H2Error) as exc:
        raise WorkloadAPIError(Status.INTERNAL, f"HTTP/2: {_one_line(exc)}") from None


async def _receive(stream: GrpcStream[Any, Any], what: str) -> bytes | None:
    """The next message of `stream` as bytes (None at its clean end), framing checked
    before anything is buffered."""
    if not stream._recv_initial_metadata_done:
        await stream.recv_initial_metadata()
    h2_stream = stream._stream
    with stream._wrapper:  # grpclib wakes us through it when the stream is terminated
        try:
            prefix = await h2_stream.recv_data(5)
        except AssertionError:  # grpclib: the stream ended inside the 5-byte prefix
            raise RefusedMessage("undecodable_message",
                                 f"{what}: the stream ended inside a message prefix") from None
        if not prefix:
            if stream._trailers_only is not True and h2_stream.trailers is None:
                raise WorkloadAPIError(Status.INTERNAL,
                                       "the agent ended the stream without trailers")
            return None
        compressed, length = struct.unpack(">?I", prefix)
        if compressed:
            raise RefusedMessage("undecodable_message",
                                 f"{what}: a compressed message, but no compression was "
                                 "negotiated")
        if length > MAX_MESSAGE_BYTES:
            raise RefusedMessage("message_too_large",
                                 f"{what}: a message of {length} bytes, over the "
                                 f"{MAX_MESSAGE_BYTES}-byte limit", Status.RESOURCE_EXHAUSTED)
        try:
            data = await h2_stream.recv_data(length)
        except AssertionError:
            raise RefusedMessage("undecodable_message",
                                 f"{what}: the stream ended inside a message of {length} "
                                 "bytes") from None
    return data


class WorkloadClient:
    """Calls on one connection to the agent. Use as an async context manager."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self._channel: _Channel | None = None

    async def __aenter__(self) -> WorkloadClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    def _new_channel(self) -> _Channel:
        if self.address.scheme == "unix":
            return _Channel(path=self.address.path, codec=_RawCodec(), config=_CONFIG)
        return _Channel(self.address.host, self.address.port, codec=_RawCodec(),
                        config=_CONFIG)

    async def _connected(self) -> _Channel:
        """The channel, connected and answered by the agent within CONNECT_TIMEOUT.

        A connection the agent closed is replaced by a new one at once (no reconnect
        backoff of the transport's own: the retry policy is `watch()`'s)."""
        if self._channel is None:
            self._channel = self._new_channel()
        channel = self._channel

        async def connect() -> None:
            protocol = await channel.__connect__()
            assert isinstance(protocol, _Protocol)
            await protocol.answered.wait()

        try:
            await asyncio.wait_for(connect(), CONNECT_TIMEOUT)
        except asyncio.TimeoutError:
            self._drop(channel)
            raise WorkloadAPIError(Status.UNAVAILABLE,
                                   f"no HTTP/2 answer from the agent within "
                                   f"{CONNECT_TIMEOUT:.0f} s") from None
        except BaseException:
            self._drop(channel)
            raise
        return channel

    def _drop(self, channel: _Channel) -> None:
        channel.close()
        if self._channel is channel:
            self._channel = None

    @asynccontextmanager
    async def _call(self, path: str, cardinality: Cardinality, request: ProtoMessage
                    ) -> AsyncIterator[GrpcStream[Any, Any]]:
        with _errors():
            channel = await self._connected()
            async with channel.request(path, cardinality, type(request), bytes,
                                       metadata=SECURITY_HEADER) as stream:
                await _isolated(stream.send_message(request, end=True))
                yield stream

    async def _server_stream(self, path: str, request: ProtoMessage, reply: type[P]
                             ) -> AsyncIterator[P]:
        what = path.rsplit("/", 1)[-1]
        async with self._call(path, Cardinality.UNARY_STREAM, request) as stream:
            while (data := await _isolated(_receive(stream, what))) is not None:
                yield _decode(data, reply, what)

    async def x509_svid_stream(self) -> AsyncIterator[workload_pb2.X509SVIDResponse]:
        """One FetchX509SVID stream; ends when the server ends it cleanly."""
        async for message in self._server_stream(_X509_SVID, workload_pb2.X509SVIDRequest(),
                                                  workload_pb2.X509SVIDResponse):
            yield message

    async def jwt_bundle_stream(self) -> AsyncIterator[workload_pb2.JWTBundlesResponse]:
        """One FetchJWTBundles stream; ends when the server ends it cleanly."""
        async for message in self._server_stream(_JWT_BUNDLES,
                                                  workload_pb2.JWTBundlesRequest(),
                                                  workload_pb2.JWTBundlesResponse):
            yield message

    async def fetch_jwt_svid(
        self, audience: Sequence[str], spiffe_id: str = "", *, timeout: float = UNARY_TIMEOUT
    ) -> workload_pb2.JWTSVIDResponse:
        """One FetchJWTSVID call (unary) for `audience`; raises WorkloadAPIError."""
        request = workload_pb2.JWTSVIDRequest(audience=list(audience), spiffe_id=spiffe_id)

        async def call() -> bytes | None:
            async with self._call(_JWT_SVID, Cardinality.UNARY_UNARY, request) as stream:
                data = await _isolated(_receive(stream, "FetchJWTSVID"))
                if data is not None:
                    extra = await _isolated(_receive(stream, "FetchJWTSVID"))  # to the end
                    if extra is not None:
                        raise WorkloadAPIError(Status.INTERNAL,
                                               "FetchJWTSVID: more than one response message")
            return data  # the trailers were read (and their status checked) on the way out

        try:
            data = await asyncio.wait_for(call(), timeout)
        except asyncio.TimeoutError:
            raise WorkloadAPIError(Status.DEADLINE_EXCEEDED,
                                   f"no answer within {timeout:g} s") from None
        if data is None:
            raise WorkloadAPIError(Status.INTERNAL, "FetchJWTSVID: no response message")
        return _decode(data, workload_pb2.JWTSVIDResponse, "FetchJWTSVID")


async def watch(
    open_stream: Callable[[], AsyncIterator[M]],
    *,
    backoff: Backoff,
    what: str,
    on_retry: Callable[[WorkloadAPIError | None, float], None] | None = None,
) -> AsyncGenerator[M, None]:
    """Yield the messages of successive streams, forever.

    A stream that ends cleanly is re-opened (at once if it delivered anything, else after
    a backoff delay, so a server that hangs up at once cannot make us spin). Transient
    errors are retried after `backoff.next_delay()`; the caller resets `backoff` after each
    message it accepts. Final errors (INVALID_ARGUMENT, UNIMPLEMENTED) are raised. A
    message that could not be used (`RefusedMessage`) is logged once, here, and the stream
    restarted after a backoff delay; `on_retry` gets the error so it can be counted.
    """
    while True:
        received = False
        error: WorkloadAPIError | None = None
        try:
            async for message in open_stream():
                received = True
                yield message
        except WorkloadAPIError as exc:
            if exc.final:
                raise
            error = exc
        if error is None and received:
            log.info("%s: stream ended by the agent; re-opening", what)
            delay = 0.0
        else:
            delay = backoff.next_delay()
            if isinstance(error, RefusedMessage):
                log.error("%s: refused message (rule %s): %s; files left as they are; "
                          "stream restarted, retrying in %.1f s", what, error.rule,
                          error.details, delay)
            else:
                reason = str(error) if error else "stream ended before any message"
                log.warning("%s: %s; retrying in %.1f s", what, reason, delay)
        if on_retry is not None:
            on_retry(error, delay)
        if delay:
            await asyncio.sleep(delay)
