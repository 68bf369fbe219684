"""The dev agent's Workload API server over a real unix socket, its streams and thread runner."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import grpc
import pytest
from devagent_util import (
    CALL_TIMEOUT,
    HEADER,
    Stub,
    open_stream,
    public_der,
    serial,
    split_der,
    verified_chain,
)

from helper._proto import workload_pb2, workload_pb2_grpc
from helper.devagent import AgentOptions, DevAgent, DevAgentThread

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
