"""The Workload API client: the one network edge of the helper.

`WorkloadClient` opens calls on a `grpc.aio` channel with the `workload.spiffe.io: true`
header every SPIFFE agent requires. `watch()` turns one-shot streams into an endless
sequence of messages, re-opening streams that end and retrying transient errors with
backoff, and raising the final ones (shared/README section 1).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

from helper._proto import workload_pb2, workload_pb2_grpc
from helper.address import Address
from helper.backoff import Backoff
from helper.errors import HelperError

log = logging.getLogger("spiffe_helper.workload")

SECURITY_HEADER = (("workload.spiffe.io", "true"),)

# A bug or a missing feature on one side: reported, never retried.
FINAL_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED})

# gRPC's own reconnect backoff defaults to a 120 s cap, far longer than ours: keep the
# channel's reconnect attempts at least as eager as the retry policy above it.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.enable_http_proxy", 0),
    # A new channel gets its own connection (and backoff state), not one shared
    # process-wide with the channel it replaces (see WorkloadClient._stub_for_call).
    ("grpc.use_local_subchannel_pool", 1),
)

# A unary call (FetchJWTSVID) that takes longer than this failed (and is retried).
UNARY_TIMEOUT = 30.0

M = TypeVar("M")


class WorkloadAPIError(HelperError):
    """A Workload API call failed. `final` errors must not be retried."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details
        self.final = code in FINAL_CODES
        super().__init__(f"{code.name}: {details}" if details else code.name)


def _error(exc: grpc.aio.AioRpcError) -> WorkloadAPIError:
    return WorkloadAPIError(exc.code(), exc.details() or "")


async def _messages(call: grpc.aio.UnaryStreamCall[Any, M]) -> AsyncIterator[M]:
    """The messages of one server stream; gRPC errors become WorkloadAPIError, and the
    call is cancelled however the consumer stops."""
    try:
        async for message in call:
            yield message
    except grpc.aio.AioRpcError as exc:
        raise _error(exc) from None
    finally:
        call.cancel()


class WorkloadClient:
    """Calls on one channel to the agent. Use as an async context manager."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self._channel = grpc.aio.insecure_channel(address.grpc_target, options=CHANNEL_OPTIONS)
        self._stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(self._channel)

    async def _stub_for_call(self) -> workload_pb2_grpc.SpiffeWorkloadAPIStub:
        """The stub to open the next call on.

        A channel that lost the agent sits in TRANSIENT_FAILURE for its own reconnect
        backoff and fails every call at once with the old error, even when the agent is
        back: our retry would be wasted and the outage doubled. Such a channel is replaced,
        so each retry is a real connection attempt (a healthy channel is never touched).
        """
        if self._channel.get_state() == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            # replaced before the old one is closed: a concurrent caller (the X.509 stream,
            # the JWT calls) sees the new channel, never a half-replaced client
            old = self._channel
            self._channel = grpc.aio.insecure_channel(self.address.grpc_target,
                                                      options=CHANNEL_OPTIONS)
            self._stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(self._channel)
            await old.close(grace=None)
        return self._stub

    async def __aenter__(self) -> WorkloadClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def x509_svid_stream(self) -> AsyncIterator[workload_pb2.X509SVIDResponse]:
        """One FetchX509SVID stream; ends when the server ends it cleanly."""
        stub = await self._stub_for_call()
        async for message in _messages(stub.FetchX509SVID(workload_pb2.X509SVIDRequest(),
                                                          metadata=SECURITY_HEADER)):
            yield message

    async def jwt_bundle_stream(self) -> AsyncIterator[workload_pb2.JWTBundlesResponse]:
        """One FetchJWTBundles stream; ends when the server ends it cleanly."""
        stub = await self._stub_for_call()
        async for message in _messages(stub.FetchJWTBundles(workload_pb2.JWTBundlesRequest(),
                                                            metadata=SECURITY_HEADER)):
            yield message

    async def fetch_jwt_svid(
        self, audience: Sequence[str], spiffe_id: str = "", *, timeout: float = UNARY_TIMEOUT
    ) -> workload_pb2.JWTSVIDResponse:
        """One FetchJWTSVID call (unary) for `audience`; raises WorkloadAPIError."""
        request = workload_pb2.JWTSVIDRequest(audience=list(audience), spiffe_id=spiffe_id)
        try:
            stub = await self._stub_for_call()
            response: workload_pb2.JWTSVIDResponse = await stub.FetchJWTSVID(
                request, metadata=SECURITY_HEADER, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc) from None
        return response


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
    message it accepts. Final errors (INVALID_ARGUMENT, UNIMPLEMENTED) are raised.
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
            reason = str(error) if error else "stream ended before any message"
            log.warning("%s: %s; retrying in %.1f s", what, reason, delay)
        if on_retry is not None:
            on_retry(error, delay)
        if delay:
            await asyncio.sleep(delay)
