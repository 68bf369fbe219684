"""The dev agent's CLI: serving, rotating on signals, stopping, its arguments."""

from __future__ import annotations

import datetime
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from devagent_util import (
    CALL_TIMEOUT,
    HEADER,
    jwt_bundles_by_td,
    open_stream,
    serial,
    split_der,
    verified_chain,
)

from helper._proto import workload_pb2, workload_pb2_grpc
from helper.identity.jwt import validate_jwt_svid

REPO = Path(__file__).resolve().parents[2]


# ----- the CLI -----


def read_line(stream: object, deadline: float) -> str:
    """Read one line from a pipe without blocking past `deadline`."""
    fd = stream.fileno()  # type: ignore[attr-defined]
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(remaining, 0))
        if not ready:
            raise TimeoutError(f"no complete line within the deadline (got {data!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            raise EOFError(f"pipe closed after {data!r}")
        data += chunk
    return data.decode()


def start_cli(*args: str) -> subprocess.Popen[bytes]:
    code = "import sys; from helper.devagent.cli import main; sys.exit(main())"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_cli_serves_rotates_on_signals_and_stops_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "cli.sock"
    proc = start_cli("--socket", str(path), "--trust-domain", "cli.test", "--federate", "f.test",
                     "--jwt-ttl", "42")
    try:
        line = read_line(proc.stdout, time.monotonic() + CALL_TIMEOUT)
        assert line == f"dev-agent: serving unix://{path} for spiffe://cli.test/workload\n"
        with grpc.insecure_channel(f"unix://{path}") as channel:
            stream = open_stream(workload_pb2_grpc.SpiffeWorkloadAPIStub(channel))
            first = next(stream)
            assert list(first.federated_bundles) == ["spiffe://f.test"]
            proc.send_signal(signal.SIGUSR1)
            second = next(stream)
            assert serial(second) != serial(first)
            assert second.svids[0].bundle == first.svids[0].bundle
            client = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
            jwt_stream = client.FetchJWTBundles(workload_pb2.JWTBundlesRequest(),
                                                metadata=HEADER, timeout=CALL_TIMEOUT)
            kids = set(jwt_bundles_by_td(next(jwt_stream))["cli.test"].keys)
            token = client.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=["a"]),
                                        metadata=HEADER, timeout=CALL_TIMEOUT).svids[0].svid
            bundles = jwt_bundles_by_td(agent_jwt_bundles(client))
            expiry = validate_jwt_svid(token, "a", bundles).expiry
            remaining = (expiry - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
            assert 30 < remaining <= 42
            proc.send_signal(signal.SIGUSR2)
            third = next(stream)
            assert len(split_der(third.svids[0].bundle)) == 2
            verified_chain(third.svids[0])
            rotated = set(jwt_bundles_by_td(next(jwt_stream))["cli.test"].keys)
            assert kids < rotated
            jwt_stream.cancel()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(CALL_TIMEOUT) == 0
        assert not path.exists()
        _, stderr = proc.communicate(timeout=CALL_TIMEOUT)
        assert b"PRIVATE KEY" not in stderr
        assert b"Traceback" not in stderr
        assert stderr.count(b"minted X.509-SVID") == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(CALL_TIMEOUT)
        proc.communicate(timeout=CALL_TIMEOUT)


def agent_jwt_bundles(client: workload_pb2_grpc.SpiffeWorkloadAPIStub,
                      ) -> workload_pb2.JWTBundlesResponse:
    stream = client.FetchJWTBundles(workload_pb2.JWTBundlesRequest(), metadata=HEADER,
                                    timeout=CALL_TIMEOUT)
    first = next(stream)
    stream.cancel()
    return first


def test_cli_exits_1_when_the_socket_cannot_be_used(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = start_cli("--socket", str(blocker))
    _, stderr = proc.communicate(timeout=CALL_TIMEOUT)
    assert proc.returncode == 1
    assert b"not a socket" in stderr


def test_cli_parses_extra_svids() -> None:
    import argparse

    from helper.devagent.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--socket", "/s", "--svid", "spiffe://a.org/x,hx", "--svid", "spiffe://a.org/y"]
    )
    assert args.svid == [("spiffe://a.org/x", "hx"), ("spiffe://a.org/y", "")]
    assert args.rotate_every is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--socket", "/s", "--svid", "a.org/x"])
