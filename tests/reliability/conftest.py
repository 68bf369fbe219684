"""Fixtures of the reliability suite; the shared helpers are in relutil.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:  # tests/util.py and tests/pki.py
    sys.path.insert(0, str(TESTS))

from helper.devagent import DevAgentThread  # noqa: E402


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[DevAgentThread]:
    with DevAgentThread(str(tmp_path / "agent" / "api.sock")) as a:
        yield a


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    d = tmp_path / "certs"
    d.mkdir()
    return d
