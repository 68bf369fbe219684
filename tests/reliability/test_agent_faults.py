"""Faults of the agent (issue 8, items 1 and 2): absent, killed, replaced, hanging up,
refusing for a while, refusing for good. The real CLI against the real dev-agent."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import psutil
from cryptography import x509
from relutil import (
    RETRYING,
    AgentProcess,
    consistent_serial,
    consistent_set,
    disk_state,
    first_write,
    health_block,
    http_get,
    metric_samples,
    serial_of,
    streaming,
    temps,
    write_conf,
)
from util import HelperProcess, free_port, wait_for

from helper.devagent import DevAgentThread
from helper.workload.address import parse_address
from helper.workload.client import WorkloadAPIError, WorkloadClient

CPU_SHARE_LIMIT = 0.05  # of wall time, while the agent is down


def retry_delays(helper: HelperProcess) -> list[float]:
    return [float(d) for d in RETRYING.findall(helper.output())]


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def measure_idle_cpu(helper: HelperProcess, retries: int) -> tuple[float, float, int]:
    """From the next retry line on, wait for `retries` more; (cpu seconds, wall seconds,
    retry lines) over that window, while the agent is down."""
    proc = psutil.Process(helper.proc.pid)
    start_count = len(retry_delays(helper))
    wait_for(lambda: len(retry_delays(helper)) > start_count, 15, "a retry")
    cpu0, wall0 = cpu_seconds(proc), time.monotonic()
    seen = len(retry_delays(helper))
    wait_for(lambda: len(retry_delays(helper)) >= seen + retries, 20, f"{retries} retries")
    return cpu_seconds(proc) - cpu0, time.monotonic() - wall0, len(retry_delays(helper)) - seen


def assert_backs_off(delays: list[float]) -> None:
    """Delays grow (about 1 s doubling, 20 % jitter): not a busy loop."""
    assert delays[0] >= 0.7, delays
    for before, after in itertools.pairwise(delays):
        assert after > before * 1.3 or after >= 24, delays


def wait_reconnected(helper: HelperProcess, done: Callable[[], object], timeout: float = 20,
                     grace: float = 1.0) -> None:
    """Wait for `done` once the agent is back (ready now); no attempt may fail from now on.

    A failed attempt logs its retry line at once; one seen more than `grace` seconds after
    the agent was ready was a wasted retry (e.g. gRPC failing the call from its own backoff
    while the agent listens), which would stretch the outage by a whole backoff step.
    """
    up = time.monotonic()
    seen = len(retry_delays(helper))
    late: list[float] = []

    def check() -> object:
        nonlocal seen
        now = len(retry_delays(helper))
        if now > seen:
            seen = now
            if time.monotonic() - up > grace:
                late.append(time.monotonic() - up)
        return done()

    wait_for(check, timeout, "the helper to reconnect")
    assert late == [], f"attempts failed {late} s after the agent was back:\n{helper.output()}"


def test_agent_absent_at_start_is_waited_for_with_backoff_and_low_cpu(tmp_path: Path,
                                                                     certs: Path) -> None:
    socket = tmp_path / "agent" / "api.sock"
    conf = write_conf(tmp_path, str(socket), certs)
    with HelperProcess("-config", str(conf), log=tmp_path / "helper.log") as helper:
        wait_for(lambda: retry_delays(helper), 10, "the first failed attempt")
        cpu, wall, attempts = measure_idle_cpu(helper, retries=1)
        assert helper.proc.poll() is None, helper.output()
        assert cpu < CPU_SHARE_LIMIT * wall, (cpu, wall)
        assert attempts == 1, helper.output()  # one attempt in ~2 s, not hundreds
        assert "UNAVAILABLE" in helper.output()
        assert_backs_off(retry_delays(helper))
        assert list(certs.iterdir()) == []
        with AgentProcess(socket, "--spiffe-id", "spiffe://example.org/late"):
            wait_reconnected(helper, lambda: consistent_serial(certs))
            leaf = consistent_set(certs)
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
                "spiffe://example.org/late"]
            assert helper.stop() == 0
    assert temps(certs) == []


def test_agent_killed_mid_stream_then_replaced_by_one_with_a_new_ca(tmp_path: Path,
                                                                   certs: Path) -> None:
    socket = tmp_path / "agent" / "api.sock"
    port = free_port()
    conf = write_conf(tmp_path, str(socket), certs, health_block(port))
    first_agent = AgentProcess(socket)
    try:
        with HelperProcess("-config", str(conf), log=tmp_path / "helper.log") as helper:
            first_write(certs)
            old_root = x509.load_pem_x509_certificates((certs / "svid_bundle.pem").read_bytes())
            before = disk_state(certs)
            first_agent.kill()  # SIGKILL mid-stream: no goodbye, a stale socket file stays
            wait_for(lambda: retry_delays(helper), 10, "the lost stream noticed")
            cpu, wall, attempts = measure_idle_cpu(helper, retries=1)
            assert helper.proc.poll() is None, helper.output()
            assert cpu < CPU_SHARE_LIMIT * wall, (cpu, wall)
            assert attempts == 1, helper.output()
            assert_backs_off(retry_delays(helper))
            assert disk_state(certs) == before  # byte-identical, same inodes, while down
            # every failed attempt is counted, and liveness holds: the files are good
            wait_for(lambda: metric_samples(port, "workload_api_reconnects_total") == {
                "": len(retry_delays(helper))}, 5, "reconnects counted")
            live = http_get(port, "/live")
            assert live is not None
            assert live[0] == 200

            with AgentProcess(socket):  # a new process: a brand-new CA
                wait_reconnected(helper, lambda: disk_state(certs)["svid_bundle.pem"] != before[
                    "svid_bundle.pem"])
                wait_for(lambda: consistent_serial(certs), 10, "a consistent new set")
                new_root = x509.load_pem_x509_certificates(
                    (certs / "svid_bundle.pem").read_bytes())
                assert new_root != old_root
                leaf = consistent_set(certs)
                assert leaf.issuer == new_root[0].subject
                assert helper.stop() == 0
    finally:
        first_agent.close()
    assert temps(certs) == []


def test_stream_ended_cleanly_is_reopened_once_each_time(tmp_path: Path, certs: Path,
                                                         agent: DevAgentThread) -> None:
    with streaming(tmp_path, agent, certs) as (helper, before, calls):
        for n in range(1, 4):
            agent.end_streams()
            agent.wait_streams(1)
            assert agent.calls == calls + n  # re-opened once, at once
            assert disk_state(certs) == before
        good = agent.rotate()
        wait_for(lambda: consistent_serial(certs) == serial_of(good), what="next rotation")
        assert agent.calls == calls + 3
        assert helper.proc.poll() is None
        assert helper.stop() == 0


def test_permission_denied_for_a_while_is_retried_with_backoff(tmp_path: Path, certs: Path,
                                                               agent: DevAgentThread) -> None:
    with streaming(tmp_path, agent, certs) as (helper, before, calls):
        agent.fail_next(2, grpc.StatusCode.PERMISSION_DENIED, "no identity for you yet")
        agent.end_streams()
        wait_for(lambda: agent.calls >= calls + 2, 10, "the refused calls")
        good = agent.rotate()  # what the agent will hand out once it knows us again
        assert disk_state(certs) == before
        wait_for(lambda: consistent_serial(certs) == serial_of(good), 15, "the new identity")
        assert agent.calls == calls + 3  # the re-open, one retry, the good one
        delays = retry_delays(helper)
        assert helper.output().count("PERMISSION_DENIED") == 2
        assert len(delays) == 2
        assert_backs_off(delays)
        assert helper.stop() == 0


def test_invalid_argument_mid_stream_is_final_one_call_files_kept(tmp_path: Path, certs: Path,
                                                                  agent: DevAgentThread) -> None:
    with streaming(tmp_path, agent, certs) as (helper, before, calls):
        agent.fail_next(100, grpc.StatusCode.INVALID_ARGUMENT, "you are doing it wrong")
        agent.end_streams()
        assert helper.proc.wait(10) == 1
        assert agent.calls == calls + 1
        assert "INVALID_ARGUMENT" in helper.output()
        assert disk_state(certs) == before
        assert temps(certs) == []


def test_the_first_attempt_after_the_agent_is_back_connects(tmp_path: Path) -> None:
    """A gRPC channel with a reconnect backoff of its own (grpcio's) fails calls at once while
    in it, even when the agent is listening again: the helper's retry must still reach the
    agent (the grpclib client connects afresh on every attempt after a failure)."""
    socket = tmp_path / "agent" / "api.sock"

    async def scenario() -> list[str]:
        outcomes: list[str] = []
        async with WorkloadClient(parse_address(f"unix://{socket}")) as client:
            with DevAgentThread(str(socket)):
                await anext(client.x509_svid_stream())
            for _ in range(4):  # the agent is gone: the channel backs off further each time
                with contextlib.suppress(WorkloadAPIError):
                    await anext(client.x509_svid_stream())
            with DevAgentThread(str(socket)) as back:
                message = await anext(client.x509_svid_stream())
                outcomes.append(message.svids[0].spiffe_id)
                outcomes.append(str(back.calls))
        return outcomes

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == ["spiffe://example.org/workload", "1"]
