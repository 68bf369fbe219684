"""The health listener: the Go helper's liveness and readiness checks, plus /metrics and /status.

A small HTTP/1.1 server on asyncio streams (no dependency): GET and HEAD only, one request
per connection (``Connection: close``), request heads bounded in size and in time. Idle
connections cost a coroutine each and are dropped after READ_TIMEOUT; there is no small
cap for them to fill (a full server drops its oldest idle connection for a new one).

- ``liveness_path`` and ``readiness_path`` answer exactly as the Go tool does: 200 or 503
  with ``{"status":"OK"|"Service Unavailable","health":{"file_write_statuses":
  {"x509_write_status":...,"jwt_write_status":{...}}}}`` (``x509_write_status`` left out
  when no X.509 output is configured, as Go's ``omitempty`` does). Live unless a write
  failed; ready once every configured file has been written and, beyond Go, as long as no
  SVID in use has expired without a renewal.
- ``/metrics``: the Prometheus text format (helper.ops.metrics).
- ``/status``: a JSON document for ``spiffe-helper status`` (helper.ops.status_report).

Only in daemon mode, like Go. The response logic is pure (``respond``); the server is the
I/O edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

from helper.config import Config, HealthChecks
from helper.features import Feature
from helper.ops import metrics
from helper.ops import status_report as statusview
from helper.ops.status import Status

log = logging.getLogger("spiffe_helper.health")

METRICS_PATH = "/metrics"
STATUS_PATH = "/status"
MAX_REQUEST_HEAD = 8192  # bytes: request line and headers
READ_TIMEOUT = 5.0  # seconds to send the request head (Go: ReadHeaderTimeout 5 s)
WRITE_TIMEOUT = 5.0  # seconds to take the response (Go: WriteTimeout 5 s)
# Connections held at once. Past this, the oldest connection still waiting for its
# request is dropped for the new one: idle or slow clients can never lock out a probe
# (they are dropped after READ_TIMEOUT anyway). Half the file descriptor limit, so the
# helper keeps descriptors for its own files.
MAX_CONNECTIONS_CAP = 4096


def max_connections() -> int:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # pragma: no cover - POSIX has it
        return 512
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS_CAP
    return max(64, min(MAX_CONNECTIONS_CAP, soft // 2))


OK_TEXT = "OK"
UNAVAILABLE_TEXT = "Service Unavailable"
JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           431: "Request Header Fields Too Large", 503: "Service Unavailable"}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


# --- pure: what to answer -------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    code: int
    content_type: str
    body: bytes
    extra_headers: tuple[tuple[str, str], ...] = ()


class BadRequest(ValueError):
    pass


def go_json(value: Any) -> bytes:
    """JSON as Go's encoding/json writes it: compact, and <, >, &, U+2028/9 escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text.encode("utf-8")


def file_write_statuses(status: Status) -> dict[str, Any]:
    """Go's FileWriteStatuses: x509 omitted when not configured, JWT paths sorted (a Go map)."""
    statuses: dict[str, Any] = {}
    if status.x509_write_status is not None:
        statuses["x509_write_status"] = status.x509_write_status
    statuses["jwt_write_status"] = dict(sorted(status.jwt_write_status.items()))
    return statuses


def health_response(good: bool, status: Status) -> Response:
    """The Go tool's health response: its JSON body and 200 or 503."""
    body = {"status": OK_TEXT if good else UNAVAILABLE_TEXT,
            "health": {"file_write_statuses": file_write_statuses(status)}}
    return Response(200 if good else 503, JSON_TYPE, go_json(body))


def parse_request_head(head: bytes) -> tuple[str, str]:
    """(method, path) of an HTTP/1.x request head; BadRequest when it is not one."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise BadRequest("malformed request line")
    method, target, version = parts
    if not re.fullmatch(r"HTTP/1\.[0-9]", version):
        raise BadRequest("unsupported HTTP version")
    if not target.startswith("/"):
        raise BadRequest("request target must be a path")
    return method, unquote(target.split("?", 1)[0])


def respond(method: str, path: str, *, checks: HealthChecks, status: Status, now: datetime,
            config_file: str = "") -> Response:
    """The answer to `method path`. The configured check paths win over /metrics, /status."""
    routes = (checks.liveness_path, checks.readiness_path, METRICS_PATH, STATUS_PATH)
    if path not in routes:
        return Response(404, TEXT_TYPE, b"404 page not found\n")
    if method not in ("GET", "HEAD"):
        return Response(405, TEXT_TYPE, b"Method Not Allowed\n", (("Allow", "GET, HEAD"),))
    if path == checks.liveness_path:
        return health_response(status.live(), status)
    if path == checks.readiness_path:
        return health_response(status.ready_at(now), status)
    if path == METRICS_PATH:
        return Response(200, metrics.CONTENT_TYPE, metrics.render(status, now).encode())
    document = statusview.status_document(status, now, config_file=config_file)
    return Response(200, JSON_TYPE, go_json(document))


def encode_response(response: Response, *, head_only: bool, date: str = "") -> bytes:
    reason = REASONS.get(response.code, "")
    headers = [("Content-Type", response.content_type),
               ("Content-Length", str(len(response.body))),
               ("Connection", "close"),
               ("Cache-Control", "no-store"),
               *response.extra_headers]
    if date:
        headers.append(("Date", date))
    head = f"HTTP/1.1 {response.code} {reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    return head.encode("latin-1") + (b"" if head_only else response.body)


def listen_host(checks: HealthChecks) -> str | None:
    """The host for asyncio.start_server: None (every interface, like Go's ":port") or an IP."""
    return checks.bind_address or None


def url_host(checks: HealthChecks) -> str:
    """How a local client reaches the listener."""
    address = checks.bind_address
    if address in ("", "0.0.0.0"):  # noqa: S104 - a value to compare, not to bind
        return "127.0.0.1"
    if address == "::":
        return "[::1]"
    return f"[{address}]" if ":" in address else address


# --- I/O: the server ----------------------------------------------------------------------


def _bind_key(cfg: Config) -> tuple[bool, str, int]:
    checks = cfg.health_checks
    return checks.listener_enabled, checks.bind_address, checks.bind_port


class HealthServer(Feature):
    """Serves the checks from `status` while `listener_enabled`; rebinds on a reload.

    A feature (helper.features): `serve` listens until the helper stops, `reconfigure`
    takes a new config. Only in daemon mode (the Go tool serves them only there).
    """

    def __init__(self, cfg: Config, status: Status) -> None:
        self.cfg = cfg
        self.status = status
        self.server: asyncio.Server | None = None
        # connections still reading their request, oldest first
        self._waiting: dict[asyncio.StreamWriter, None] = {}
        self._connections = 0
        self.max_connections = max_connections()
        self.read_timeout = READ_TIMEOUT
        self.write_timeout = WRITE_TIMEOUT

    @property
    def port(self) -> int | None:
        """The port listened on (useful with bind_port chosen by the kernel in tests)."""
        if self.server is None or not self.server.sockets:
            return None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        checks = self.cfg.health_checks
        if not checks.listener_enabled or self.server is not None:
            return
        where = f"{checks.bind_address or '*'}:{checks.bind_port}"
        try:
            self.server = await asyncio.start_server(
                self._serve_connection, host=listen_host(checks), port=checks.bind_port,
                limit=MAX_REQUEST_HEAD, reuse_address=True)
        except OSError as exc:
            # as the Go tool: the helper keeps running without its health checks
            log.error("health listener: cannot listen on %s: %s; health checks are off",
                      where, exc.strerror or exc)
            return
        log.info("health listener on %s: liveness %s, readiness %s, %s, %s", where,
                 checks.liveness_path, checks.readiness_path, METRICS_PATH, STATUS_PATH)

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), self.read_timeout + self.write_timeout)

    async def serve(self) -> int | None:
        """The service: listen until the helper stops."""
        try:
            await self.start()
            await asyncio.Event().wait()
        finally:
            await self.stop()
        return None

    async def reconfigure(self, old: Config, new: Config) -> None:
        """Listen where the new config says (paths need nothing: each request reads them)."""
        self.cfg = new
        if _bind_key(old) == _bind_key(new):
            return
        await self.stop()
        await self.start()

    async def _serve_connection(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        if self._connections > self.max_connections and self._waiting:
            # full: make room by dropping the connection that has waited longest for its
            # request (never one being answered)
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            oldest.transport.abort()
        self._waiting[writer] = None
        try:
            await self._answer(reader, writer)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away, was too slow or was dropped: nothing to answer
        finally:
            self._waiting.pop(writer, None)
            self._connections -= 1
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), self.write_timeout)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = ""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.read_timeout)
            self._waiting.pop(writer, None)  # answered now, never dropped for a newcomer
            method, path = parse_request_head(head)
            response = respond(method, path, checks=self.cfg.health_checks,
                               status=self.status, now=datetime.now(timezone.utc),
                               config_file=self.cfg.source)
        except asyncio.LimitOverrunError:
            path, response = "?", Response(431, TEXT_TYPE, b"request head too large\n")
        except BadRequest as exc:
            path, response = "?", Response(400, TEXT_TYPE, f"{exc}\n".encode())
        log.debug("health: %s %s -> %d", method or "?", _printable(path), response.code)
        writer.write(encode_response(response, head_only=method == "HEAD",
                                     date=email.utils.formatdate(usegmt=True)))
        await asyncio.wait_for(writer.drain(), self.write_timeout)


def _printable(text: str, limit: int = 100) -> str:
    """A client-chosen path made safe for one log line."""
    safe = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return safe + ("..." if len(text) > limit else "")
