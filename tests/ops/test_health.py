"""The health listener: the Go tool's JSON and codes, and an HTTP edge that cannot be abused.

The pure part (`respond`) is checked on Status values; the server runs in-process on a
real socket for the protocol cases (bad, oversized and slow requests).
"""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import datetime, timedelta, timezone

import pytest
from util import free_port

from helper.app import initial_status
from helper.config import Config, HealthChecks
from helper.ops.health import (
    MAX_REQUEST_HEAD,
    HealthServer,
    go_json,
    parse_request_head,
    respond,
    url_host,
)
from helper.ops.status import FAILED, UNWRITTEN, WRITTEN, Status

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
CHECKS = HealthChecks(listener_enabled=True)


def answer(status: Status, path: str, method: str = "GET", checks: HealthChecks = CHECKS):
    return respond(method, path, checks=checks, status=status, now=NOW)


# --- the Go tool's bodies, byte for byte --------------------------------------------------


def test_x509_ready_body_is_the_go_body_byte_for_byte():
    response = answer(Status(x509_write_status=WRITTEN), "/ready")
    assert response.code == 200
    assert response.content_type == "application/json"
    assert response.body == (b'{"status":"OK","health":{"file_write_statuses":'
                             b'{"x509_write_status":"written","jwt_write_status":{}}}}')


def test_unwritten_is_live_but_not_ready():
    status = Status(x509_write_status=UNWRITTEN)
    assert answer(status, "/live").code == 200
    not_ready = answer(status, "/ready")
    assert not_ready.code == 503
    assert json.loads(not_ready.body)["status"] == "Service Unavailable"


def test_a_failed_write_is_not_live():
    status = Status(x509_write_status=FAILED)
    assert answer(status, "/live").code == 503
    status = Status(x509_write_status=WRITTEN, jwt_write_status={"/c/a.jwt": FAILED})
    assert answer(status, "/live").code == 503


def test_jwt_only_omits_x509_status_and_sorts_paths_like_a_go_map():
    status = Status(jwt_write_status={"/c/b.jwt": WRITTEN, "/c/a.jwt": UNWRITTEN})
    body = answer(status, "/ready").body
    assert body == (b'{"status":"Service Unavailable","health":{"file_write_statuses":'
                    b'{"jwt_write_status":{"/c/a.jwt":"unwritten","/c/b.jwt":"written"}}}}')


def test_go_json_escapes_html_characters_as_go_does():
    assert go_json({"a<b>&\u2028": "x"}) == b'{"a\\u003cb\\u003e\\u0026\\u2028":"x"}'


def test_an_expired_svid_without_renewal_makes_readiness_fail_but_not_liveness():
    status = Status(x509_write_status=WRITTEN, spiffe_id="spiffe://example.org/w",
                    x509_expiry=NOW - timedelta(seconds=1))
    assert answer(status, "/ready").code == 503
    assert answer(status, "/live").code == 200
    status.x509_expiry = NOW + timedelta(hours=1)  # the renewal arrived
    assert answer(status, "/ready").code == 200


def test_configured_paths_are_served_and_others_are_404():
    checks = HealthChecks(True, 8081, "/healthz", "/readyz")
    status = Status(x509_write_status=WRITTEN)
    assert answer(status, "/healthz", checks=checks).code == 200
    assert answer(status, "/readyz", checks=checks).code == 200
    assert answer(status, "/live", checks=checks).code == 404
    assert answer(status, "/live/", checks=checks).code == 404
    assert answer(status, "/metrics", checks=checks).code == 200
    assert answer(status, "/status", checks=checks).code == 200


def test_other_methods_are_405_with_allow():
    response = answer(Status(), "/live", method="POST")
    assert response.code == 405
    assert ("Allow", "GET, HEAD") in response.extra_headers


@pytest.mark.parametrize("head", [b"GET /live\r\n\r\n", b"GET live HTTP/1.1\r\n\r\n",
                                  b"GET /live HTTP/2\r\n\r\n", b"G(T /live HTTP/1.1\r\n\r\n",
                                  b"\r\n\r\n"])
def test_malformed_request_lines_are_refused(head):
    with pytest.raises(ValueError):  # noqa: PT011 - BadRequest is a ValueError
        parse_request_head(head)


def test_query_strings_and_percent_escapes_are_read_as_go_does():
    assert parse_request_head(b"GET /li%76e?x=1 HTTP/1.1\r\n\r\n") == ("GET", "/live")


@pytest.mark.parametrize(("address", "host"), [("", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"),
                                               ("::", "[::1]"), ("::1", "[::1]"),
                                               ("10.0.0.1", "10.0.0.1")])
def test_url_host_reaches_the_listener_locally(address, host):
    assert url_host(HealthChecks(bind_address=address)) == host


# --- the server on a real socket ---------------------------------------------------------


async def with_server(scenario, *, bind_address: str = "127.0.0.1"):
    cfg = Config(svid_file_name="s", svid_key_file_name="k", svid_bundle_file_name="b",
                 health_checks=HealthChecks(True, free_port(), bind_address=bind_address))
    status = initial_status(cfg)
    status.x509_write_status = WRITTEN
    server = HealthServer(cfg, status)
    server.read_timeout = 0.3
    await server.start()
    assert server.port == cfg.health_checks.bind_port
    try:
        return await scenario(server, cfg.health_checks.bind_port)
    finally:
        await server.stop()


async def exchange(port: int, data: bytes, host: str = "127.0.0.1") -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return reply


def test_server_answers_get_and_head_and_closes_the_connection():
    async def scenario(server, port):
        get = await exchange(port, b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await exchange(port, b"HEAD /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        return get, head

    get, head = asyncio.run(with_server(scenario))
    assert get.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in get
    assert get.endswith(b'"jwt_write_status":{}}}}')
    head_lines, _, body = head.partition(b"\r\n\r\n")
    assert body == b""
    assert b"Content-Length: 102" in head_lines


def test_oversized_request_head_is_refused_with_431():
    async def scenario(server, port):
        big = b"GET /live HTTP/1.1\r\nX-Pad: " + b"a" * (MAX_REQUEST_HEAD * 2) + b"\r\n\r\n"
        return await exchange(port, big)

    assert asyncio.run(with_server(scenario)).startswith(b"HTTP/1.1 431 ")


def test_garbage_is_answered_400():
    async def scenario(server, port):
        return await exchange(port, b"\x16\x03\x01 hello\r\n\r\n")

    assert asyncio.run(with_server(scenario)).startswith(b"HTTP/1.1 400 ")


def test_a_client_that_never_finishes_its_request_is_dropped():
    async def scenario(server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /live HTTP/1.1\r\n")  # and then nothing
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5)  # closed after read_timeout
        writer.close()
        return reply

    assert asyncio.run(with_server(scenario)) == b""


def test_ipv6_literal_bind_address():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")

    async def scenario(server, port):
        return await exchange(port, b"GET /live HTTP/1.1\r\n\r\n", host="::1")

    assert asyncio.run(with_server(scenario, bind_address="::1")).startswith(b"HTTP/1.1 200")


def test_a_port_in_use_is_logged_and_the_helper_goes_on(caplog):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = Config(svid_file_name="s", svid_key_file_name="k", svid_bundle_file_name="b",
                     health_checks=HealthChecks(True, port, bind_address="127.0.0.1"))
        server = HealthServer(cfg, initial_status(cfg))

        async def start():
            await server.start()
            return server.server

        assert asyncio.run(start()) is None
    assert "health checks are off" in caplog.text
