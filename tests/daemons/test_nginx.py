"""nginx served by rotating SVIDs: the example in examples/nginx/, run for real.

One nginx for the module: the helper starts it as `cmd` and sends it SIGHUP on rotation.
A Python TLS client verifies the chain against the bundle the helper wrote and compares
the served leaf with the one on disk; a download started before the rotations keeps
streaming through three SVID rotations and a CA rotation and arrives intact.
"""

from __future__ import annotations

import hashlib
import http.client
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from harness import (
    ROTATIONS,
    SERVED_WITHIN,
    Stack,
    client_context,
    example_stack,
    require_binaries,
    served_cert_https,
    spiffe_ids,
)
from util import leaf_serial, read_certs, wait_for

pytestmark = pytest.mark.daemon

BIG = 32 * 1024 * 1024  # larger than the socket buffers, so nginx is still sending later
CHUNK = 4 * 1024 * 1024


@dataclass
class Nginx(Stack):
    big_sha256: str = ""

    def served(self):
        return served_cert_https(self.port, self.bundle)


@pytest.fixture(scope="module")
def stack() -> Iterator[Nginx]:
    require_binaries("nginx")
    # What examples/nginx/README.md does, step by step.
    with example_stack(Nginx, "nginx", ("certs", "www", "tmp"),
                       dns_names=("localhost",)) as stack:
        (stack.work / "www" / "index.html").write_text("hello from nginx over a SPIFFE SVID\n")
        big = os.urandom(BIG)
        (stack.work / "www" / "big.bin").write_bytes(big)
        stack.big_sha256 = hashlib.sha256(big).hexdigest()
        with stack.running(stack.helper_process("helper.hcl"),
                           serving="nginx (started by the helper)"):
            yield stack


def test_nginx_serves_the_svid_on_disk_verified_against_the_written_bundle(stack):
    leaf = stack.served()  # verified: chain against svid_bundle.pem, host name localhost
    assert leaf.serial_number == leaf_serial(stack.svid) == stack.agent.svids[0].serial
    assert spiffe_ids(leaf) == [stack.agent.spiffe_id]
    conn = http.client.HTTPSConnection("localhost", stack.port, timeout=5,
                                       context=client_context(stack.bundle))
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"hello from nginx over a SPIFFE SVID\n"
    conn.close()


def test_nginx_serves_each_rotation_within_5s_while_a_download_in_flight_continues(stack):
    # One long-lived connection, opened before the rotations: a 32 MiB download that we
    # read a little of after each rotation (the old worker keeps serving it).
    download = http.client.HTTPSConnection("localhost", stack.port, timeout=10,
                                           context=client_context(stack.bundle))
    download.request("GET", "/big.bin")
    response = download.getresponse()
    assert response.status == 200
    digest = hashlib.sha256(response.read(CHUNK // 4))
    received = CHUNK // 4

    rotations = []
    for rotation in stack.rotations():
        rotations.append(rotation)
        chunk = response.read(CHUNK)
        assert len(chunk) == CHUNK, f"download cut after the {rotation.kind} rotation"
        digest.update(chunk)
        received += len(chunk)

    rest = response.read()
    digest.update(rest)
    assert received + len(rest) == BIG
    assert digest.hexdigest() == stack.big_sha256
    download.close()

    assert len({r.serial for r in rotations}) == len(ROTATIONS)
    print("served after (s):", *(f"{r.kind} {r.seconds:.2f}" for r in rotations))  # -rP shows it
    assert all(r.seconds < SERVED_WITHIN for r in rotations), rotations
    # After the CA rotation the served leaf chains to the new root, which the bundle on
    # disk holds next to the previous one.
    ca_rotation = rotations[-1]
    assert ca_rotation.served.issuer == stack.agent.ca.root.subject
    roots = {c.subject for c in read_certs(stack.bundle)}
    assert stack.agent.ca.root.subject in roots
    assert len(roots) == 2
    assert stack.helper.output().count("signal 1 (SIGHUP) received") >= len(ROTATIONS)


def test_sigterm_to_the_helper_stops_nginx_and_exits_with_its_status(stack):
    pid = int((stack.work / "nginx.pid").read_text())
    assert stack.helper.stop(timeout=20) == 0  # nginx exits 0 on TERM; on_cmd_exit = "exit"
    # nginx removes its pid file on a clean exit, and nothing listens any more.
    assert not (stack.work / "nginx.pid").exists()
    wait_for(lambda: not _running(pid), 5, what="nginx master gone")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
