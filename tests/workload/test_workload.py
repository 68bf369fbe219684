"""helper.workload.client against the real dev-agent over a real Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpclib.const import Status

from helper._proto import workload_pb2
from helper.devagent import AgentOptions, DevAgent
from helper.workload import client as workload
from helper.workload.address import parse_address
from helper.workload.backoff import Backoff
from helper.workload.client import SECURITY_HEADER, WorkloadAPIError, WorkloadClient, watch


@contextlib.asynccontextmanager
async def agent_and_client(tmp_path: Path, **options: Any,
                           ) -> AsyncIterator[tuple[DevAgent, WorkloadClient]]:
    """A dev-agent on tmp_path/a.sock and a client connected to it; both closed on exit."""
    agent = DevAgent(AgentOptions(str(tmp_path / "a.sock"), **options))
    await agent.start()
    try:
        async with WorkloadClient(parse_address(agent.address)) as client:
            yield agent, client
    finally:
        await agent.stop()


def fast_backoff() -> Backoff:
    return Backoff(initial=0.05, cap=0.2, jitter=0)


async def take(n, aiter):
    out = []
    async for m in aiter:
        out.append(m)
        if len(out) == n:
            break
    return out


def test_security_header_is_the_spiffe_one():
    assert SECURITY_HEADER == (("workload.spiffe.io", "true"),)


def test_stream_delivers_rotations(tmp_path):
    async def scenario():
        async with agent_and_client(tmp_path) as (agent, client):
            stream = client.x509_svid_stream()
            first = await anext(stream)
            agent.rotate()
            second = await anext(stream)
            await stream.aclose()
        return first, second

    first, second = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert first.svids[0].spiffe_id == "spiffe://example.org/workload"
    assert first.svids[0].x509_svid != second.svids[0].x509_svid


def test_watch_reopens_a_stream_that_ends_cleanly(tmp_path):
    async def scenario():
        async with agent_and_client(tmp_path) as (agent, client):
            retries = []
            messages = watch(client.x509_svid_stream, backoff=fast_backoff(), what="test",
                             on_retry=lambda e, d: retries.append((e, d)))
            await anext(messages)
            agent.end_streams()
            await anext(messages)  # from a new stream
            await messages.aclose()
        return agent.calls, retries

    calls, retries = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert calls == 2
    assert retries == [(None, 0.0)]  # re-opened at once: the stream had delivered


def test_watch_retries_unavailable_until_the_agent_appears(tmp_path):
    sock = tmp_path / "late.sock"

    async def scenario():
        retries = []
        agent = DevAgent(str(sock))
        started = asyncio.Event()

        def on_retry(error, delay):
            retries.append(error.code if error else None)
            if len(retries) == 3 and not started.is_set():
                started.set()

        async def start_late():
            await started.wait()
            await agent.start()

        starter = asyncio.create_task(start_late())
        try:
            async with WorkloadClient(parse_address(f"unix://{sock}")) as client:
                messages = watch(client.x509_svid_stream, backoff=fast_backoff(), what="test",
                                 on_retry=on_retry)
                message = await anext(messages)
                await messages.aclose()
        finally:
            await starter
            await agent.stop()
        return message, retries

    message, retries = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert message.svids
    assert retries[:3] == [Status.UNAVAILABLE] * 3


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT,
                                  grpc.StatusCode.UNIMPLEMENTED])
def test_watch_raises_final_errors_at_once(tmp_path, code):
    async def scenario():
        async with agent_and_client(tmp_path) as (agent, client):
            agent.fail_next(5, code, "nope")
            messages = watch(client.x509_svid_stream, backoff=fast_backoff(), what="test")
            with pytest.raises(WorkloadAPIError) as info:
                await anext(messages)
        return info.value, agent.calls

    error, calls = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert error.final
    assert error.code.name == code.name  # the dev-agent is grpcio, the client grpclib
    assert calls == 1


def test_watch_backs_off_on_permission_denied(tmp_path):
    async def scenario():
        async with agent_and_client(tmp_path) as (agent, client):
            agent.fail_next(3, grpc.StatusCode.PERMISSION_DENIED, "not yet")
            delays = []
            messages = watch(client.x509_svid_stream,
                             backoff=Backoff(initial=0.01, cap=1, factor=2, jitter=0),
                             what="test", on_retry=lambda e, d: delays.append(d))
            await anext(messages)
            await messages.aclose()
        return delays

    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == [0.01, 0.02, 0.04]


def test_jwt_calls_deliver_tokens_and_bundles_and_map_errors(tmp_path):
    async def scenario():
        async with agent_and_client(tmp_path) as (agent, client):
            bundles = client.jwt_bundle_stream()
            first = await anext(bundles)
            agent.rotate_jwt_key()
            second = await anext(bundles)
            await bundles.aclose()
            response = await client.fetch_jwt_svid(["aud"])
            agent.fail_jwt_svids(grpc.StatusCode.UNAVAILABLE)
            with pytest.raises(WorkloadAPIError) as transient:
                await client.fetch_jwt_svid(["aud"])
            agent.fail_jwt_svids(None)
            with pytest.raises(WorkloadAPIError) as final:
                await client.fetch_jwt_svid([])  # no audience: INVALID_ARGUMENT
        return first, second, response, transient.value, final.value

    first, second, response, transient, final = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert list(first.bundles) == ["spiffe://example.org"]
    assert second.bundles != first.bundles
    assert response.svids[0].spiffe_id == "spiffe://example.org/workload"
    assert not transient.final
    assert transient.code == Status.UNAVAILABLE
    assert final.code == Status.INVALID_ARGUMENT
    assert final.final


# --- the grpclib client's promises (issue 13), each against the grpcio dev-agent ----------

NOT_PROTOBUF = {
    "invalid UTF-8 in a string field": b"\x0a\x04\x0a\x02\xff\xfe",
    "a truncated varint": b"\x08\xff",
}


def test_tcp_addresses_reach_the_agent(tmp_path):
    async def scenario():
        agent = DevAgent(AgentOptions(str(tmp_path / "a.sock"), tcp_port=0))
        await agent.start()
        try:
            async with WorkloadClient(parse_address(f"tcp://127.0.0.1:{agent.tcp_port}")) as c:
                stream = c.x509_svid_stream()
                message = await anext(stream)
                await stream.aclose()
                token = await c.fetch_jwt_svid(["aud"])
        finally:
            await agent.stop()
        return message, token

    message, token = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert message.svids[0].spiffe_id == "spiffe://example.org/workload"
    assert token.svids[0].svid.count(".") == 2


def test_trailers_only_errors_keep_their_code_and_details(tmp_path):
    """grpcio answers a call aborted before any message with a trailers-only response."""
    async def scenario():
        async with agent_and_client(tmp_path) as (agent, client):
            agent.fail_next(1, grpc.StatusCode.PERMISSION_DENIED, "no identity for ünïcode")
            with pytest.raises(WorkloadAPIError) as info:
                await anext(client.x509_svid_stream())
            second = await anext(client.x509_svid_stream())  # same connection, fine
        return info.value, second

    error, second = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert (error.code, error.details, error.final) == (
        Status.PERMISSION_DENIED, "no identity for ünïcode", False)
    assert second.svids


def test_a_large_federation_fits_the_message_size_cap(tmp_path):
    """1000 federated bundles (about 0.7 MiB) arrive; the cap (16 MiB) is far above it."""
    async def scenario():
        federate = [f"td{i}.example" for i in range(1000)]
        async with agent_and_client(tmp_path, federate=federate) as (_agent, client):
            stream = client.x509_svid_stream()
            message = await anext(stream)
            await stream.aclose()
        return message

    message = asyncio.run(asyncio.wait_for(scenario(), 50))
    assert len(message.federated_bundles) == 1000
    assert 500_000 < message.ByteSize() < workload.MAX_MESSAGE_BYTES


def test_ten_thousand_pushes_on_one_stream_never_stall(tmp_path):
    """About 20 MB through one stream, five times grpclib's 4 MiB flow-control windows:
    every window is acknowledged as messages are read, so nothing stalls."""
    pushes = 10_000

    async def scenario():
        async with agent_and_client(tmp_path) as (agent, client):
            base = agent.current
            received = []
            stream = client.x509_svid_stream()
            received.append(await anext(stream))

            async def read_all():
                while len(received) < pushes + 1:
                    received.append(await anext(stream))

            reader = asyncio.create_task(read_all())
            for i in range(pushes):
                message = workload_pb2.X509SVIDResponse()
                message.CopyFrom(base)
                message.svids[0].hint = f"push {i}"
                agent.push(message)
                await agent.flush(20)  # written by the server: nothing coalesced
            await asyncio.wait_for(reader, 30)
            await stream.aclose()
        return received, agent.calls

    received, calls = asyncio.run(asyncio.wait_for(scenario(), 55))
    assert calls == 1
    assert len(received) == pushes + 1
    assert [m.svids[0].hint for m in received[1:]] == [f"push {i}" for i in range(pushes)]
    assert sum(m.ByteSize() for m in received) > 2 * 4 * 1024 * 1024


@pytest.mark.parametrize("stream_name", ["x509", "jwt_bundles"])
@pytest.mark.parametrize("data", NOT_PROTOBUF.values(), ids=NOT_PROTOBUF.keys())
def test_an_undecodable_message_is_refused_and_the_stream_restarted(tmp_path, stream_name,
                                                                    data):
    async def scenario():
        async with agent_and_client(tmp_path) as (agent, client):
            retries = []
            open_stream = (client.x509_svid_stream if stream_name == "x509"
                           else client.jwt_bundle_stream)
            messages = watch(open_stream, backoff=fast_backoff(), what="test",
                             on_retry=lambda e, d: retries.append((e, d)))
            first = await anext(messages)
            agent.push_raw(data, stream_name)
            await agent.flush(10)
            # the restarted stream gets the raw message again until a good one is out
            good = agent.rotate() if stream_name == "x509" else agent.rotate_jwt_key()
            second = await anext(messages)
            await messages.aclose()
        return first, second, good, retries

    first, second, good, retries = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert second == good
    assert first != second
    errors = [e for e, _ in retries]
    assert errors
    for error, delay in retries:
        assert isinstance(error, workload.RefusedMessage)
        assert error.rule == "undecodable_message"
        assert error.code == Status.INTERNAL
        assert not error.final
        assert delay > 0  # with backoff, never a spin


def test_an_undecodable_jwt_svid_answer_is_a_refused_message(tmp_path):
    async def scenario():
        async with agent_and_client(tmp_path) as (agent, client):
            agent.push_raw(NOT_PROTOBUF["invalid UTF-8 in a string field"], "jwt_svid")
            with pytest.raises(workload.RefusedMessage) as info:
                await client.fetch_jwt_svid(["aud"])
            response = await client.fetch_jwt_svid(["aud"])  # the next answer is good
        return info.value, response

    error, response = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert error.rule == "undecodable_message"
    assert "JWTSVIDResponse" in str(error)
    assert response.svids


def test_connect_times_out_on_a_socket_that_never_answers(tmp_path, monkeypatch):
    """Connecting includes the agent's HTTP/2 SETTINGS: a listener that accepts and says
    nothing is UNAVAILABLE after CONNECT_TIMEOUT, and the next attempt connects anew."""
    monkeypatch.setattr(workload, "CONNECT_TIMEOUT", 0.3)
    sock = tmp_path / "silent.sock"

    async def scenario():
        accepted = []

        async def accept(reader, writer):
            accepted.append(writer)
            await reader.read()  # never answers

        server = await asyncio.start_unix_server(accept, path=str(sock))
        try:
            async with WorkloadClient(parse_address(f"unix://{sock}")) as client:
                errors = []
                for _ in range(2):
                    with pytest.raises(WorkloadAPIError) as info:
                        await anext(client.x509_svid_stream())
                    errors.append(info.value)
                with pytest.raises(WorkloadAPIError) as jwt_info:
                    await client.fetch_jwt_svid(["aud"])
                errors.append(jwt_info.value)
        finally:
            for writer in accepted:
                writer.close()
            server.close()
            await server.wait_closed()
        return errors, len(accepted)

    errors, accepted = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert [e.code for e in errors] == [Status.UNAVAILABLE] * 3
    assert "no HTTP/2 answer from the agent within" in str(errors[0])
    assert accepted == 3


def test_a_shutdown_is_never_swallowed_by_a_stream_terminated_at_the_same_moment():
    """grpclib wakes a step blocked on a terminated stream by cancelling its task and then
    raises StreamTerminatedError instead of CancelledError: a shutdown's cancel arriving at
    that moment would be lost (the helper kept retrying after SIGTERM). Each grpclib step
    runs isolated in its own task, so the caller's cancellation always wins."""
    from grpclib.exceptions import StreamTerminatedError
    from grpclib.utils import Wrapper

    async def scenario(isolated):
        wrapper = Wrapper()
        blocked = asyncio.Event()

        async def step():
            with wrapper:
                blocked.set()
                await asyncio.Event().wait()

        caller = asyncio.ensure_future(workload._isolated(step()) if isolated else step())
        await blocked.wait()
        wrapper.cancel(StreamTerminatedError("Connection lost"))  # grpclib's wake-up
        caller.cancel()  # the shutdown, in the same loop iteration
        try:
            await caller
        except asyncio.CancelledError:
            return "cancelled"
        except StreamTerminatedError:
            return "swallowed"
        return "returned"

    assert asyncio.run(asyncio.wait_for(scenario(isolated=False), 5)) == "swallowed"
    assert asyncio.run(asyncio.wait_for(scenario(isolated=True), 5)) == "cancelled"


def test_a_call_without_the_security_header_is_refused_so_every_passing_call_sent_it(tmp_path):
    from grpclib.client import Channel
    from grpclib.const import Cardinality
    from grpclib.exceptions import GRPCError

    async def scenario():
        agent = DevAgent(str(tmp_path / "a.sock"))
        await agent.start()
        try:
            async with Channel(path=agent.socket_path) as channel:
                call = channel.request("/SpiffeWorkloadAPI/FetchX509SVID",
                                       Cardinality.UNARY_STREAM, workload_pb2.X509SVIDRequest,
                                       workload_pb2.X509SVIDResponse)

                async def without_header():
                    async with call as stream:
                        await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
                        await stream.recv_message()

                with pytest.raises(GRPCError) as info:
                    await without_header()
            async with WorkloadClient(parse_address(agent.address)) as client:
                message = await anext(client.x509_svid_stream())
        finally:
            await agent.stop()
        return info.value, message

    error, message = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert error.status == Status.INVALID_ARGUMENT
    assert "security header" in (error.message or "")
    assert message.svids
