"""An embedded SPIFFE Workload API server: the test double and the demo agent.

`DevAgent` serves a `Feed` (helper.devagent.feed: what it hands out) with grpc.aio on a
unix socket, and optionally on 127.0.0.1. It checks the security header, counts calls,
fails calls on purpose when asked to, and stops cleanly. `DevAgentThread`
(helper.devagent.runner) runs one on its own loop in a thread for tests and the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from helper._proto import workload_pb2
from helper.devagent.feed import AgentOptions, Feed, Latest, RawMessage
from helper.errors import Refused
from helper.identity.jwks import parse_jwt_bundles
from helper.identity.jwt import validate_jwt_svid

SECURITY_HEADER = "workload.spiffe.io"
SECURITY_HEADER_MISSING = "security header missing from request"
STOPPING = "dev-agent is stopping"
MAX_UNIX_PATH_BYTES = 107
STOP_WAIT = 2.0  # seconds stop() waits for open calls to finish before the server stops
STOP_GRACE = 1.0

Context = grpc.aio.ServicerContext[Any, Any]


class DevAgent(Feed):
    """A Workload API server on a unix socket that mints X.509-SVIDs and JWT-SVIDs from a
    `DevCA`.

    Takes one `AgentOptions` (or just the socket path). The control methods of `Feed`
    and `fail_next`, `fail_jwt_svids` are plain methods to be called on the agent's event
    loop; each takes effect at once and returns.
    """

    def __init__(self, options: AgentOptions | str | os.PathLike[str]) -> None:
        if not isinstance(options, AgentOptions):
            options = AgentOptions(options)
        super().__init__(options)
        self.socket_path = os.path.abspath(os.fspath(options.socket_path))
        self.tcp_port = options.tcp_port  # the port bound, once started
        self.calls = 0
        self.bundle_calls = 0
        self.jwt_calls = 0
        self.jwt_bundle_calls = 0
        self._jwt_failure: tuple[grpc.StatusCode, str] | None = None
        self._active_calls = 0
        self._stopping = False
        self._fail_remaining = 0
        self._fail_status: tuple[grpc.StatusCode, str] = (grpc.StatusCode.UNKNOWN, "")
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return "unix://" + self.socket_path

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
        self._add_handlers(server)
        server.add_insecure_port(self.address)
        if self.tcp_port is not None:
            self.tcp_port = server.add_insecure_port(f"127.0.0.1:{self.tcp_port}")
        await server.start()
        self._server = server
        self.began_serving()

    async def stop(self, grace: float | None = STOP_GRACE) -> None:
        """Stop serving, cleanly: open streams are ended with status OK, new calls are
        refused with UNAVAILABLE, and open calls get up to `STOP_WAIT` seconds to finish
        before the server stops; calls still open `grace` seconds later are cancelled
        (grace 0 or None cancels at once, which makes gRPC send every client a GOAWAY
        "Cancelling all calls"). Ending calls ourselves, rather than having gRPC cancel
        them, keeps CancelledError tracebacks and GOAWAY logs out of the output."""
        self.stop_rotation()
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

    # ----- failures on purpose -----

    def fail_jwt_svids(self, code: grpc.StatusCode | None, details: str = "") -> None:
        """Answer every FetchJWTSVID call with `code` until called again with None."""
        self._jwt_failure = None if code is None else (
            code, details or f"dev-agent: injected {code.name}")

    def fail_next(self, n: int, code: grpc.StatusCode, details: str = "") -> None:
        """Answer the next `n` calls (of any method) with `code` before any message."""
        self._fail_remaining = n
        self._fail_status = (code, details or f"dev-agent: injected {code.name}")

    # ----- the Workload API -----

    async def fetch_x509_svid(self, request: workload_pb2.X509SVIDRequest,
                              context: Context) -> None:
        self.calls += 1
        await self._stream(self._x509, context)

    async def fetch_x509_bundles(self, request: workload_pb2.X509BundlesRequest,
                                 context: Context) -> None:
        self.bundle_calls += 1
        await self._stream(self._bundles, context)

    async def fetch_jwt_bundles(self, request: workload_pb2.JWTBundlesRequest,
                                context: Context) -> None:
        self.jwt_bundle_calls += 1
        await self._stream(self._jwt_bundles, context)

    async def fetch_jwt_svid(
        self, request: workload_pb2.JWTSVIDRequest, context: Context
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
            response = self.jwt_svid_response(list(request.audience), request.spiffe_id)
            if response is None:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
                raise AssertionError("unreachable: abort raises")
            return response

    async def validate_jwt_svid(
        self, request: workload_pb2.ValidateJWTSVIDRequest, context: Context
    ) -> workload_pb2.ValidateJWTSVIDResponse:
        """Validate a JWT-SVID against the agent's current JWT bundles
        (helper.identity.jwt rules)."""
        async with self._call():
            await self._admit(context)
            if not request.audience or not request.svid:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "audience and svid must be specified")
            try:
                bundles = parse_jwt_bundles(dict(self.current_jwt_bundles.bundles))
                svid = validate_jwt_svid(request.svid, request.audience, bundles)
            except Refused as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                raise  # unreachable: abort raises
            response = workload_pb2.ValidateJWTSVIDResponse(spiffe_id=svid.spiffe_id)
            response.claims.update(dict(svid.claims))
            return response

    # ----- internals -----

    def _add_handlers(self, server: grpc.aio.Server) -> None:
        """The generated `add_SpiffeWorkloadAPIServicer_to_server`, with this agent's
        methods as the handlers and responses serialised by `_serialize` (so a
        `RawMessage` goes out as it is)."""
        stream, unary = grpc.unary_stream_rpc_method_handler, grpc.unary_unary_rpc_method_handler
        pb = workload_pb2
        methods: tuple[tuple[str, Any, Any, Callable[..., Awaitable[Any]]], ...] = (
            ("FetchX509SVID", stream, pb.X509SVIDRequest, self.fetch_x509_svid),
            ("FetchX509Bundles", stream, pb.X509BundlesRequest, self.fetch_x509_bundles),
            ("FetchJWTSVID", unary, pb.JWTSVIDRequest, self.fetch_jwt_svid),
            ("FetchJWTBundles", stream, pb.JWTBundlesRequest, self.fetch_jwt_bundles),
            ("ValidateJWTSVID", unary, pb.ValidateJWTSVIDRequest, self.validate_jwt_svid))
        handlers = {name: kind(handler, request_deserializer=request.FromString,
                               response_serializer=_serialize)
                    for name, kind, request, handler in methods}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("SpiffeWorkloadAPI", handlers),))
        server.add_registered_method_handlers(  # type: ignore[attr-defined]  # not in grpc-stubs
            "SpiffeWorkloadAPI", handlers)

    async def _stream(self, latest: Latest[Any], context: Context) -> None:
        async with self._call():
            await self._admit(context)
            await self.follow(latest, context.write)

    @contextlib.asynccontextmanager
    async def _call(self) -> AsyncIterator[None]:
        """Count an open call (stop() waits for them to finish)."""
        self._active_calls += 1
        try:
            yield
        finally:
            self._active_calls -= 1
            self._changed.set()

    async def _admit(self, context: Context) -> None:
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


def _serialize(message: Any) -> bytes:
    if isinstance(message, RawMessage):
        return bytes(message)
    data: bytes = message.SerializeToString()
    return data


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
