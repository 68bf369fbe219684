"""A hostile agent (issue 13, item 4): a raw HTTP/2 server that first serves a good
X.509-SVID message, then answers every connection with malformed gRPC: a message that is
not protobuf, a compressed flag without negotiated compression, a length prefix larger
than the data, a prefix over the size cap, trailers without grpc-status, headers that end
the stream, GOAWAY, RST_STREAM, a malformed HTTP/2 frame, or nothing at all.

Each time the real daemon logs one line saying what was wrong (no traceback), retries
with backoff, keeps the last good files (bytes and inodes) and keeps running.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_h2 import MODES, HostileServer
from relutil import RETRYING, disk_state, first_write, temps, write_conf
from util import HelperProcess, wait_for

from helper.devagent import DevAgent


@pytest.fixture(scope="module")
def good_message(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    sock = tmp_path_factory.mktemp("mint") / "unused.sock"
    return DevAgent(str(sock)).current.SerializeToString()  # minted, never served


@pytest.mark.parametrize("mode", MODES)
def test_hostile_agent_gets_a_one_line_error_a_retry_with_backoff_and_files_kept(
        tmp_path: Path, certs: Path, good_message: bytes, mode: str) -> None:
    socket = tmp_path / "agent" / "api.sock"
    socket.parent.mkdir()
    conf = write_conf(tmp_path, str(socket), certs)
    with HostileServer(socket, good_message) as server, \
            HelperProcess("-config", str(conf), log=tmp_path / "helper.log") as helper:
        first_write(certs)
        before = disk_state(certs)
        server.set_mode(mode)
        wanted = MODES[mode]
        line = wait_for(lambda: next((x for x in helper.output().splitlines() if wanted in x),
                                     None), 30, f"the {mode} error")
        attempts = server.connections + server.requests  # a retry opens either
        wait_for(lambda: server.connections + server.requests > attempts, 20,
                 "a retry after it")

        output = helper.output()
        assert "Traceback" not in output, output
        assert helper.proc.poll() is None, output
        # one line: what was wrong and when the next attempt is
        delay = float(RETRYING.findall(line)[0])
        assert delay >= 0.7, line
        assert "\n" not in line
        assert disk_state(certs) == before
        assert temps(certs) == []
        # backoff: the attempts after the switch come a growing delay apart, never a spin
        delays = [float(d) for d in RETRYING.findall(output)]
        assert all(d >= 0.7 for d in delays), delays
        assert server.connections + server.requests < 12
        assert helper.stop() == 0
