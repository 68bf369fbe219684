"""Fixtures of the dev agent tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from devagent_util import Stub

from helper._proto import workload_pb2_grpc
from helper.devagent import DevAgentThread


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[Stub]:
    with (
        DevAgentThread(tmp_path / "agent.sock") as agent,
        grpc.insecure_channel(agent.address) as channel,
    ):
        yield agent, workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
