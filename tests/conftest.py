"""Fixtures shared by the test modules: the real dev-agent on a real socket, a cert dir."""

from __future__ import annotations

import hypothesis_profile
import pytest

from helper.devagent import DevAgentThread

hypothesis_profile.load()


@pytest.fixture
def agent(tmp_path):
    """A dev-agent serving the Workload API on a Unix socket under tmp_path."""
    with DevAgentThread(str(tmp_path / "agent" / "api.sock")) as a:
        yield a


@pytest.fixture
def certs(tmp_path):
    """An empty, existing cert_dir."""
    d = tmp_path / "certs"
    d.mkdir()
    return d
