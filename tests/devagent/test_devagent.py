"""The dev agent: its CA, its Workload API server over a real unix socket, and its CLI."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from helper._proto import workload_pb2, workload_pb2_grpc
from helper.devagent import AgentOptions, DevAgent, DevAgentThread, DevCA
from helper.devagent.ca import CLOCK_SKEW
from helper.identity.jwks import JWTBundle, parse_jwt_bundles
from helper.identity.jwt import validate_jwt_svid

REPO = Path(__file__).resolve().parents[2]
HEADER = (("workload.spiffe.io", "true"),)
CALL_TIMEOUT = 10.0


# ----- helpers -----


def split_der(data: bytes) -> list[x509.Certificate]:
    """Split concatenated DER certificates (each a SEQUENCE with a definite length)."""
    certs = []
    while data:
        assert data[0] == 0x30
        first = data[1]
        if first < 0x80:
            size, header = first, 2
        else:
            count = first & 0x7F
            size, header = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
        certs.append(x509.load_der_x509_certificate(data[: header + size]))
        data = data[header + size :]
    return certs


def public_der(key_holder: x509.Certificate | bytes) -> bytes:
    if isinstance(key_holder, bytes):
        public = serialization.load_der_private_key(key_holder, None).public_key()
    else:
        public = key_holder.public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verified_chain(svid: workload_pb2.X509SVID) -> list[x509.Certificate]:
    """Verify the SVID's chain to its bundle; return the chain from leaf to root."""
    chain = split_der(svid.x509_svid)
    verifier = PolicyBuilder().store(Store(split_der(svid.bundle))).build_client_verifier()
    verified = verifier.verify(chain[0], chain[1:])
    assert [san.value for san in verified.subjects or []] == [svid.spiffe_id]
    return list(verified.chain)


def serial(response: workload_pb2.X509SVIDResponse) -> int:
    return split_der(response.svids[0].x509_svid)[0].serial_number


Stub = tuple[DevAgentThread, workload_pb2_grpc.SpiffeWorkloadAPIStub]


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[Stub]:
    with (
        DevAgentThread(tmp_path / "agent.sock") as agent,
        grpc.insecure_channel(agent.address) as channel,
    ):
        yield agent, workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)


def open_stream(stub: workload_pb2_grpc.SpiffeWorkloadAPIStub) -> grpc.Call:
    return stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=HEADER, timeout=CALL_TIMEOUT)


# ----- the CA -----


def test_leaf_is_a_spiffe_x509_svid() -> None:
    ca = DevCA("example.org")
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    svid = ca.mint_svid("spiffe://example.org/db", ttl=600, hint="db", now=now)
    leaf = svid.leaf
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [type(n) for n in sans] == [x509.UniformResourceIdentifier]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org/db"]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
    assert not usage.crl_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert 0 < leaf.serial_number < 2**128
    assert leaf.not_valid_before_utc == now - CLOCK_SKEW
    assert leaf.not_valid_after_utc == now + datetime.timedelta(seconds=600)
    assert public_der(svid.key) == public_der(leaf)
    assert svid.hint == "db"
    assert svid.chain_der() == leaf.public_bytes(serialization.Encoding.DER)
    leaf.verify_directly_issued_by(ca.root)


def test_root_is_a_spiffe_ca() -> None:
    ca = DevCA("example.org")
    root = ca.root
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    sans = root.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org"]
    root.verify_directly_issued_by(root)
    assert ca.bundle == (root,)


def test_dns_names_are_added_next_to_the_uri_san() -> None:
    svid = DevCA("example.org").mint_svid("spiffe://example.org/web", 60, dns_names=["localhost"])
    sans = svid.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org/web"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]


def test_negative_ttl_mints_an_expired_svid() -> None:
    svid = DevCA("example.org").mint_svid("spiffe://example.org/old", ttl=-3600)
    assert svid.leaf.not_valid_after_utc < datetime.datetime.now(datetime.timezone.utc)
    assert svid.leaf.not_valid_before_utc <= svid.leaf.not_valid_after_utc


def test_intermediate_ca_signs_the_leaf() -> None:
    ca = DevCA("example.org", intermediate=True)
    svid = ca.mint_svid("spiffe://example.org/w", 60)
    assert ca.intermediate is not None
    assert svid.chain == (svid.leaf, ca.intermediate)
    svid.leaf.verify_directly_issued_by(ca.intermediate)
    ca.intermediate.verify_directly_issued_by(ca.root)
    assert ca.bundle == (ca.root,)


def test_ca_rotation_keeps_only_the_previous_root() -> None:
    ca = DevCA("example.org")
    first = ca.root
    ca.rotate_ca()
    second = ca.root
    assert ca.bundle == (first, second)
    ca.rotate_ca()
    assert ca.bundle == (second, ca.root)
    ca.mint_svid("spiffe://example.org/w", 60).leaf.verify_directly_issued_by(ca.root)


def test_each_svid_has_its_own_key_and_serial() -> None:
    ca = DevCA("example.org")
    a, b = (ca.mint_svid("spiffe://example.org/w", 60) for _ in range(2))
    assert a.serial != b.serial
    assert a.key != b.key


# ----- the server -----


def test_first_message_is_a_valid_svid(stub: Stub) -> None:
    agent, client = stub
    response = next(open_stream(client))
    assert [s.spiffe_id for s in response.svids] == ["spiffe://example.org/workload"]
    svid = response.svids[0]
    chain = verified_chain(svid)
    assert chain[-1] == agent.ca.root
    assert public_der(svid.x509_svid_key) == public_der(chain[0])
    assert response == agent.current
    assert agent.calls == 1
    assert agent.push_count == 1


def test_rotate_pushes_a_new_serial_to_an_open_stream(stub: Stub) -> None:
    agent, client = stub
    stream = open_stream(client)
    first = next(stream)
    pushed = agent.rotate()
    second = next(stream)
    assert second == pushed
    assert serial(second) != serial(first)
    assert serial(second) == agent.svids[0].serial
    assert agent.push_count == 2
    times = agent.push_times
    assert times[0].monotonic_ns <= times[1].monotonic_ns
    assert agent.calls == 1


def test_rotate_ca_bundles_both_roots_and_signs_with_the_new_one(stub: Stub) -> None:
    agent, client = stub
    stream = open_stream(client)
    old_root = split_der(next(stream).svids[0].bundle)[0]
    agent.rotate_ca()
    svid = next(stream).svids[0]
    roots = split_der(svid.bundle)
    assert roots == [old_root, agent.ca.root]
    assert verified_chain(svid)[-1] == agent.ca.root != old_root


def test_several_svids_carry_their_hints(tmp_path: Path) -> None:
    extra = [("spiffe://example.org/db", "db"), ("spiffe://example.org/web", "web")]
    with (
        DevAgentThread(AgentOptions(tmp_path / "a.sock", hint="default", svids=extra)) as agent,
        grpc.insecure_channel(agent.address) as channel,
    ):
        response = next(open_stream(workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)))
    assert [(s.spiffe_id, s.hint) for s in response.svids] == [
        ("spiffe://example.org/workload", "default"),
        *extra,
    ]
    for svid in response.svids:
        verified_chain(svid)


def test_intermediate_is_sent_in_the_chain(tmp_path: Path) -> None:
    with (
        DevAgentThread(AgentOptions(tmp_path / "a.sock", intermediate=True)) as agent,
        grpc.insecure_channel(agent.address) as channel,
    ):
        svid = next(open_stream(workload_pb2_grpc.SpiffeWorkloadAPIStub(channel))).svids[0]
        assert split_der(svid.x509_svid)[1] == agent.ca.intermediate
        assert split_der(svid.bundle) == [agent.ca.root]
    assert len(verified_chain(svid)) == 3


def test_federated_bundles_follow_set_federated(tmp_path: Path) -> None:
    with (
        DevAgentThread(AgentOptions(tmp_path / "a.sock", federate=["one.org", "two.org"])) as agent,
        grpc.insecure_channel(agent.address) as channel,
    ):
        client = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        stream = open_stream(client)
        bundles = client.FetchX509Bundles(
            workload_pb2.X509BundlesRequest(), metadata=HEADER, timeout=CALL_TIMEOUT
        )
        first = next(stream)
        assert sorted(first.federated_bundles) == ["spiffe://one.org", "spiffe://two.org"]
        one = agent.federated_cas["one.org"]
        assert split_der(first.federated_bundles["spiffe://one.org"]) == [one.root]
        assert sorted(next(bundles).bundles) == [
            "spiffe://example.org",
            "spiffe://one.org",
            "spiffe://two.org",
        ]

        agent.set_federated(["one.org", "three.org"])
        second = next(stream)
        assert sorted(second.federated_bundles) == ["spiffe://one.org", "spiffe://three.org"]
        assert (
            second.federated_bundles["spiffe://one.org"]
            == first.federated_bundles["spiffe://one.org"]
        )
        assert second.svids == first.svids
        assert sorted(next(bundles).bundles) == [
            "spiffe://example.org",
            "spiffe://one.org",
            "spiffe://three.org",
        ]


def test_missing_security_header_is_invalid_argument(stub: Stub) -> None:
    _, client = stub
    with pytest.raises(grpc.RpcError) as failure:
        next(client.FetchX509SVID(workload_pb2.X509SVIDRequest(), timeout=CALL_TIMEOUT))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details() == "security header missing from request"


def test_fail_next_fails_exactly_that_many_calls(stub: Stub) -> None:
    agent, client = stub
    agent.fail_next(2, grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as failure:
            next(open_stream(client))
        assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert failure.value.details() == "no identity issued"
    assert next(open_stream(client)).svids
    assert agent.calls == 3


# ----- JWT-SVIDs and JWT bundles -----


def jwt_bundles_by_td(response: workload_pb2.JWTBundlesResponse) -> dict[str, JWTBundle]:
    return parse_jwt_bundles(dict(response.bundles))


def test_jwt_svid_per_identity_with_hints_verifies_with_the_streamed_bundle(
        tmp_path: Path) -> None:
    with (
        DevAgentThread(AgentOptions(tmp_path / "a.sock", svids=[("spiffe://example.org/db", "db")],
                                    jwt_ttl=120)) as agent,
        grpc.insecure_channel(agent.address) as channel,
    ):
        client = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        bundles_stream = client.FetchJWTBundles(workload_pb2.JWTBundlesRequest(),
                                                metadata=HEADER, timeout=CALL_TIMEOUT)
        bundles = jwt_bundles_by_td(next(bundles_stream))
        jwks = json.loads(agent.current_jwt_bundles.bundles["spiffe://example.org"])
        assert [k["use"] for k in jwks["keys"]] == ["jwt-svid"]
        response = client.FetchJWTSVID(
            workload_pb2.JWTSVIDRequest(audience=["aud1", "aud2"]), metadata=HEADER,
            timeout=CALL_TIMEOUT)
        assert [(s.spiffe_id, s.hint) for s in response.svids] == [
            (agent.spiffe_id, ""), ("spiffe://example.org/db", "db")]
        for item in response.svids:
            svid = validate_jwt_svid(item.svid, "aud2", bundles)
            assert svid.spiffe_id == item.spiffe_id
            assert svid.audience == ("aud1", "aud2")
            remaining = svid.expiry - datetime.datetime.now(datetime.timezone.utc)
            assert 100 < remaining.total_seconds() <= 120
        only = client.FetchJWTSVID(
            workload_pb2.JWTSVIDRequest(audience=["a"], spiffe_id="spiffe://example.org/db"),
            metadata=HEADER, timeout=CALL_TIMEOUT)
        assert [s.spiffe_id for s in only.svids] == ["spiffe://example.org/db"]
        bundles_stream.cancel()


def test_jwt_svid_request_without_audience_is_invalid_argument(stub: Stub) -> None:
    _, client = stub
    with pytest.raises(grpc.RpcError) as failure:
        client.FetchJWTSVID(workload_pb2.JWTSVIDRequest(), metadata=HEADER,
                            timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_jwt_key_rotation_and_federation_are_pushed_to_the_bundle_stream(stub: Stub) -> None:
    agent, client = stub
    stream = client.FetchJWTBundles(workload_pb2.JWTBundlesRequest(), metadata=HEADER,
                                    timeout=CALL_TIMEOUT)
    first = jwt_bundles_by_td(next(stream))
    assert list(first) == ["example.org"]
    old_kid = agent.ca.jwt_authority.kid
    agent.rotate_jwt_key()
    second = jwt_bundles_by_td(next(stream))
    assert set(second["example.org"].keys) == {old_kid, agent.ca.jwt_authority.kid}
    agent.set_federated(["partner.test"])
    assert set(jwt_bundles_by_td(next(stream))) == {"example.org", "partner.test"}
    agent.set_federated([])
    assert set(jwt_bundles_by_td(next(stream))) == {"example.org"}
    stream.cancel()


def test_validate_jwt_svid_accepts_good_and_names_the_rule_for_bad(stub: Stub) -> None:
    agent, client = stub
    token = agent.ca.mint_jwt_svid(agent.spiffe_id, ["svc"], 60)
    good = client.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(audience="svc", svid=token),
                                  metadata=HEADER, timeout=CALL_TIMEOUT)
    assert good.spiffe_id == agent.spiffe_id
    assert good.claims["sub"] == agent.spiffe_id
    with pytest.raises(grpc.RpcError) as failure:
        client.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(audience="other", svid=token),
                               metadata=HEADER, timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details().startswith("jwt_aud:")


def test_raw_jwt_responses_and_failures_can_be_injected(stub: Stub) -> None:
    agent, client = stub
    raw = workload_pb2.JWTSVIDResponse()
    raw.svids.add(spiffe_id=agent.spiffe_id, svid="not.a.token")
    agent.queue_jwt_svid_responses(raw)
    request = workload_pb2.JWTSVIDRequest(audience=["a"])
    assert client.FetchJWTSVID(request, metadata=HEADER, timeout=CALL_TIMEOUT) == raw
    assert client.FetchJWTSVID(request, metadata=HEADER, timeout=CALL_TIMEOUT) != raw
    agent.fail_jwt_svids(grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(grpc.RpcError) as failure:
        client.FetchJWTSVID(request, metadata=HEADER, timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    agent.fail_jwt_svids(None)
    assert client.FetchJWTSVID(request, metadata=HEADER, timeout=CALL_TIMEOUT).svids
    assert agent.jwt_calls == 4


def test_rotate_ca_without_reissue_changes_only_the_bundle(stub: Stub) -> None:
    agent, client = stub
    stream = open_stream(client)
    first = next(stream)
    agent.rotate_ca(reissue=False)
    second = next(stream)
    assert second.svids[0].x509_svid == first.svids[0].x509_svid
    assert len(split_der(second.svids[0].bundle)) == 2
    verified_chain(second.svids[0])
    stream.cancel()


def test_stop_ends_open_streams_with_ok(tmp_path: Path) -> None:
    agent = DevAgentThread(tmp_path / "s.sock").__enter__()
    with grpc.insecure_channel(agent.address) as channel:
        stream = open_stream(workload_pb2_grpc.SpiffeWorkloadAPIStub(channel))
        next(stream)
        agent.close()
        with pytest.raises(StopIteration):
            next(stream)
        assert stream.code() == grpc.StatusCode.OK


def test_end_streams_ends_with_ok(stub: Stub) -> None:
    agent, client = stub
    stream = open_stream(client)
    next(stream)
    agent.end_streams()
    with pytest.raises(StopIteration):
        next(stream)
    assert stream.code() == grpc.StatusCode.OK
    assert agent.open_streams == 0


def test_push_delivers_a_raw_message_to_open_and_new_streams(stub: Stub) -> None:
    agent, client = stub
    stream = open_stream(client)
    next(stream)
    hostile = workload_pb2.X509SVIDResponse(
        svids=[workload_pb2.X509SVID(spiffe_id="spiffe://evil.org/x", x509_svid=b"\x30\x00")]
    )
    agent.push(hostile)
    assert next(stream) == hostile
    assert next(open_stream(client)) == hostile
    assert agent.current == hostile


def test_wait_streams_counts_open_streams_and_is_bounded(stub: Stub) -> None:
    agent, client = stub
    with pytest.raises(TimeoutError):
        agent.wait_streams(1, timeout=0.05)
    streams = [open_stream(client) for _ in range(2)]
    agent.wait_streams(2, timeout=CALL_TIMEOUT)
    assert agent.open_streams == 2
    for stream in streams:
        stream.cancel()


def test_thread_runs_every_call_on_the_agents_loop(stub: Stub) -> None:
    agent, client = stub
    assert agent.call(lambda _: threading.current_thread().name) == "dev-agent"
    stream = open_stream(client)
    first = next(stream)
    agent.wait(lambda a: a.wait_streams(1, CALL_TIMEOUT), CALL_TIMEOUT)
    times = agent.push_times  # a copy: it does not grow with the next push
    pushed = agent.publish(DevAgent.rotate)
    assert next(stream) == pushed != first
    assert (len(times), agent.push_count, agent.call(lambda a: a.push_count)) == (1, 2, 2)
    with pytest.raises(TimeoutError):
        agent.wait(lambda a: a.wait_streams(2, 0.05), 0.05)
    stream.cancel()


def test_thread_takes_an_agent_or_its_options(tmp_path: Path) -> None:
    options = AgentOptions(tmp_path / "a.sock", federate=["one.org"], dns_names=["localhost"])
    assert (options.federate, options.dns_names, options.svids) == (("one.org",),
                                                                    ("localhost",), ())
    made = DevAgent(options)
    with DevAgentThread(made) as agent:
        assert agent.agent is made
        assert agent.address == f"unix://{tmp_path / 'a.sock'}"
        assert list(agent.federated_cas) == ["one.org"]
    with DevAgentThread(options) as agent:
        assert agent.agent.options is options


def test_rotate_every_pushes_on_its_own(tmp_path: Path) -> None:
    with (
        DevAgentThread(AgentOptions(tmp_path / "a.sock", rotate_every=0.05)) as agent,
        grpc.insecure_channel(agent.address) as channel,
    ):
        stream = open_stream(workload_pb2_grpc.SpiffeWorkloadAPIStub(channel))
        serials = {serial(next(stream)) for _ in range(3)}
        assert len(serials) == 3
        assert agent.push_count >= 3


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "run" / "a.sock"
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))
    with (
        DevAgentThread(path) as agent,
        grpc.insecure_channel(agent.address) as channel,
    ):
        assert next(open_stream(workload_pb2_grpc.SpiffeWorkloadAPIStub(channel))).svids
    assert not path.exists()


def test_start_refuses_to_remove_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("keep me")
    with pytest.raises(RuntimeError, match="not a socket"), DevAgentThread(path):
        pass
    assert path.read_text() == "keep me"


def test_async_agent_with_an_aio_client(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int]:
        agent = DevAgent(AgentOptions(tmp_path / "a.sock", trust_domain="dev.test"))
        await agent.start()
        try:
            async with grpc.aio.insecure_channel(agent.address) as channel:
                client = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
                call = client.FetchX509SVID(
                    workload_pb2.X509SVIDRequest(), metadata=HEADER, timeout=CALL_TIMEOUT
                )
                first = await call.read()
                await agent.wait_streams(1, CALL_TIMEOUT)
                agent.rotate()
                second = await call.read()
                call.cancel()
                return serial(first), serial(second)
        finally:
            await agent.stop()

    first, second = asyncio.run(asyncio.wait_for(scenario(), CALL_TIMEOUT))
    assert first != second


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
