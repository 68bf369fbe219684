"""helper.workload against the real dev-agent over a real Unix socket."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpclib.const import Status

from helper.address import parse_address
from helper.backoff import Backoff
from helper.devagent import DevAgent
from helper.workload import SECURITY_HEADER, WorkloadAPIError, WorkloadClient, watch


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
        agent = DevAgent(str(tmp_path / "a.sock"))
        await agent.start()
        try:
            async with WorkloadClient(parse_address(agent.address)) as client:
                stream = client.x509_svid_stream()
                first = await anext(stream)
                agent.rotate()
                second = await anext(stream)
                await stream.aclose()
        finally:
            await agent.stop()
        return first, second

    first, second = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert first.svids[0].spiffe_id == "spiffe://example.org/workload"
    assert first.svids[0].x509_svid != second.svids[0].x509_svid


def test_watch_reopens_a_stream_that_ends_cleanly(tmp_path):
    async def scenario():
        agent = DevAgent(str(tmp_path / "a.sock"))
        await agent.start()
        retries = []
        try:
            async with WorkloadClient(parse_address(agent.address)) as client:
                messages = watch(client.x509_svid_stream, backoff=fast_backoff(), what="test",
                                 on_retry=lambda e, d: retries.append((e, d)))
                await anext(messages)
                agent.end_streams()
                await anext(messages)  # from a new stream
                await messages.aclose()
        finally:
            await agent.stop()
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
        agent = DevAgent(str(tmp_path / "a.sock"))
        await agent.start()
        agent.fail_next(5, code, "nope")
        try:
            async with WorkloadClient(parse_address(agent.address)) as client:
                messages = watch(client.x509_svid_stream, backoff=fast_backoff(), what="test")
                with pytest.raises(WorkloadAPIError) as info:
                    await anext(messages)
        finally:
            await agent.stop()
        return info.value, agent.calls

    error, calls = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert error.final
    assert error.code.name == code.name  # the dev-agent is grpcio, the client grpclib
    assert calls == 1


def test_watch_backs_off_on_permission_denied(tmp_path):
    async def scenario():
        agent = DevAgent(str(tmp_path / "a.sock"))
        await agent.start()
        agent.fail_next(3, grpc.StatusCode.PERMISSION_DENIED, "not yet")
        delays = []
        try:
            async with WorkloadClient(parse_address(agent.address)) as client:
                messages = watch(client.x509_svid_stream,
                                 backoff=Backoff(initial=0.01, cap=1, factor=2, jitter=0),
                                 what="test", on_retry=lambda e, d: delays.append(d))
                await anext(messages)
                await messages.aclose()
        finally:
            await agent.stop()
        return delays

    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == [0.01, 0.02, 0.04]


def test_jwt_calls_deliver_tokens_and_bundles_and_map_errors(tmp_path):
    async def scenario():
        agent = DevAgent(str(tmp_path / "a.sock"))
        await agent.start()
        try:
            async with WorkloadClient(parse_address(agent.address)) as client:
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
        finally:
            await agent.stop()
        return first, second, response, transient.value, final.value

    first, second, response, transient, final = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert list(first.bundles) == ["spiffe://example.org"]
    assert second.bundles != first.bundles
    assert response.svids[0].spiffe_id == "spiffe://example.org/workload"
    assert not transient.final
    assert transient.code == Status.UNAVAILABLE
    assert final.code == Status.INVALID_ARGUMENT
    assert final.final
