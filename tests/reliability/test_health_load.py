"""Idle connections cannot take the health endpoints down (issue 12, item 7)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import statistics
import time

from relutil import health_block, write_conf
from util import HelperProcess, free_port, leaf_serial, wait_for

from helper.app import initial_status
from helper.config import Config, HealthChecks
from helper.ops.health import HealthServer
from helper.ops.status import WRITTEN

IDLE = 500


def raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        top = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


def get_live(port: int) -> tuple[float, bytes]:
    """Seconds until the whole answer to GET /live arrived, and the answer."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return time.monotonic() - start, reply


def test_live_answers_within_100_ms_while_500_idle_connections_are_held(tmp_path, agent,
                                                                        certs):
    raise_nofile(4 * IDLE)
    port = free_port()
    path = write_conf(tmp_path, agent.socket_path, certs, health_block(port))
    with HelperProcess("-config", str(path), log=tmp_path / "helper.log") as helper, \
            contextlib.ExitStack() as held:
        wait_for(lambda: leaf_serial(certs / "svid.pem"), what="first write")
        wait_for(lambda: "health listener on" in helper.output(), what="health listener")
        for _ in range(IDLE):
            held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        # the server has taken them all: a request made now queues behind none of them
        wait_for(lambda: get_live(port)[1].startswith(b"HTTP/1.1 200 "), what="/live 200")
        latencies = []
        for _ in range(7):
            took, reply = get_live(port)
            assert reply.startswith(b"HTTP/1.1 200 "), reply[:100]
            latencies.append(took)
        assert statistics.median(latencies) < 0.1, latencies
        assert max(latencies) < 1.0, latencies
        assert helper.proc.poll() is None


def test_a_full_server_drops_its_oldest_idle_connection_for_a_probe():
    async def scenario() -> tuple[bytes, int]:
        port = free_port()
        cfg = Config(svid_file_name="s", svid_key_file_name="k", svid_bundle_file_name="b",
                     health_checks=HealthChecks(True, port, bind_address="127.0.0.1"))
        status = initial_status(cfg)
        status.x509_write_status = WRITTEN
        server = HealthServer(cfg, status)
        server.max_connections = 8
        server.read_timeout = 60  # idle ones are not dropped by the timeout here
        await server.start()
        idle = []
        try:
            for _ in range(20):
                idle.append(await asyncio.open_connection("127.0.0.1", port))
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /live HTTP/1.1\r\n\r\n")
            reply = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            # the oldest idle ones were closed by the server
            dropped = 0
            for r, _ in idle[:10]:
                with contextlib.suppress(ConnectionError):
                    dropped += await asyncio.wait_for(r.read(), 2) == b""
            return reply, dropped
        finally:
            for _, w in idle:
                w.close()
            await server.stop()

    reply, dropped = asyncio.run(scenario())
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert dropped == 10


# --- issue 12, item 11: writes never block the event loop ---------------------------------

FEDERATED = 2000


def test_live_stays_fast_while_a_reload_rewrites_2000_credential_folder_files(tmp_path,
                                                                              certs):
    import signal
    import threading

    import pki

    from helper.devagent import DevAgentThread

    other = pki.TrustDomainCA.create("other.org")
    with DevAgentThread(str(tmp_path / "agent" / "api.sock")) as agent:
        message = agent.current
        for n in range(FEDERATED):
            message.federated_bundles[f"td{n}.example"] = other.root.der
        agent.push(message)
        port = free_port()
        (certs / "creds").mkdir()
        extra = 'credential_folder = "creds"\ncert_file_mode = 0644\n' + health_block(port)
        path = write_conf(tmp_path, agent.socket_path, certs, extra)
        creds = certs / "creds"
        with HelperProcess("-config", str(path), log=tmp_path / "helper.log") as helper:
            last = creds / f"td{FEDERATED - 1}.example.spiffe-trust-bundle.x509.pem"
            wait_for(lambda: last.exists(), timeout=60, what="the credential folder written")
            wait_for(lambda: get_live(port)[1].startswith(b"HTTP/1.1 200 "), what="/live")
            path.write_text(path.read_text().replace("cert_file_mode = 0644",
                                                     "cert_file_mode = 0640"))
            latencies: list[float] = []
            done = threading.Event()

            def probe() -> None:
                while not done.is_set():
                    try:
                        latencies.append(get_live(port)[0])
                    except OSError:  # timed out: the loop was blocked
                        latencies.append(float("inf"))

            prober = threading.Thread(target=probe)
            prober.start()
            try:
                wait_for(lambda: len(latencies) >= 3, what="probes before the reload")
                helper.proc.send_signal(signal.SIGHUP)
                wait_for(lambda: last.stat().st_mode & 0o777 == 0o640, timeout=60,
                         what="every file rewritten with the new mode")
            finally:
                done.set()
                prober.join()
            assert len(latencies) >= 10, latencies
            assert max(latencies) < 0.5, sorted(latencies)[-5:]
            assert helper.proc.poll() is None
