"""A hostile Workload API server: raw HTTP/2 (the `h2` state machine) on a Unix socket.

It speaks just enough gRPC to serve a good FetchX509SVID message, then, switched to
another `mode`, misbehaves the way a broken or malicious agent could. Every connection
is answered in the mode current when it was accepted; `set_mode()` drops the open ones so
the client reconnects into the new mode. Runs on its own loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from pathlib import Path

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import DataReceived, RequestReceived
from h2.exceptions import H2Error

RESPONSE_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]
OK_TRAILERS = [("grpc-status", "0")]
# A DATA frame on stream 0: a connection error in HTTP/2 (RFC 9113 section 6.1).
BAD_FRAME = b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x"

# mode -> what the client must report (a fragment of its one-line error)
MODES = {
    "undecodable": "refused message (rule undecodable_message)",
    "compressed": "a compressed message, but no compression was negotiated",
    "short": "the stream ended inside a message of",
    "oversize": "refused message (rule message_too_large)",
    "no_status": "UNKNOWN: Missing grpc-status header",
    "no_trailers": "INTERNAL: the agent ended the stream without trailers",
    "goaway": "UNAVAILABLE: Received GOAWAY frame",
    "rst_stream": "UNAVAILABLE: Stream reset by remote party",
    "bad_frame": "UNAVAILABLE: Protocol error",
    "silent": "UNAVAILABLE: no HTTP/2 answer from the agent within",
}


def grpc_frame(payload: bytes, *, compressed: bool = False, length: int | None = None) -> bytes:
    return struct.pack(">?I", compressed, len(payload) if length is None else length) + payload


class HostileServer:
    def __init__(self, path: Path, good: bytes) -> None:
        self.path = path
        self.good = good
        self.mode = "good"
        self.connections = 0  # accepted, in any mode
        self.requests = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()),
                                        name="hostile-h2", daemon=True)

    def __enter__(self) -> HostileServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("hostile server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def set_mode(self, mode: str) -> None:
        """Answer new connections in `mode`; drop the open ones (an EOF to the client)."""
        assert mode == "good" or mode in MODES, mode
        self.mode = mode
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._drop_all)

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.close()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            self._drop_all()
            server.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        mode = self.mode
        try:
            if mode == "silent":  # accepts, never sends a byte
                await reader.read()
                return
            conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
            conn.initiate_connection()
            writer.write(conn.data_to_send())
            while data := await reader.read(65536):
                try:
                    events = conn.receive_data(data)
                except H2Error:
                    return
                extra = b""
                for event in events:
                    if isinstance(event, RequestReceived):
                        self.requests += 1
                        extra += self._answer(conn, event.stream_id, mode)
                    elif isinstance(event, DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length,
                                                       event.stream_id)
                writer.write(conn.data_to_send() + extra)
        except (ConnectionError, H2Error):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, conn: H2Connection, sid: int, mode: str) -> bytes:
        """Queue the answer to one request on `conn`; return raw bytes to send after it."""
        conn.send_headers(sid, RESPONSE_HEADERS, end_stream=mode == "no_trailers")
        if mode == "good":
            conn.send_data(sid, grpc_frame(self.good))
        elif mode == "undecodable":
            conn.send_data(sid, grpc_frame(b"\x08\xff"))  # a truncated varint
        elif mode == "compressed":
            conn.send_data(sid, grpc_frame(self.good, compressed=True))
        elif mode == "short":  # the prefix promises more than the stream carries
            conn.send_data(sid, grpc_frame(self.good[:10], length=len(self.good)))
            conn.send_headers(sid, OK_TRAILERS, end_stream=True)
        elif mode == "oversize":
            conn.send_data(sid, grpc_frame(b"x" * 100, length=0xFFFFFFF0))
        elif mode == "no_status":
            conn.send_headers(sid, [("grpc-message", "bye")], end_stream=True)
        elif mode == "goaway":
            conn.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM)
        elif mode == "rst_stream":
            conn.reset_stream(sid, ErrorCodes.INTERNAL_ERROR)
        elif mode == "bad_frame":
            return BAD_FRAME
        return b""
