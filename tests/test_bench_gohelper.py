"""bench/gohelper.py, the Go spiffe-helper column: its observer sees in-place writes (the Go
helper's) as well as renames (ours), and the figure is n/a without the Go binary."""

from __future__ import annotations

import os
import time

from bench import gohelper
from bench.plan import QUICK
from bench.report import NA
from bench.workspace import subprocess_env


def test_write_observer_reports_in_place_writes_and_renames(tmp_path):
    env = subprocess_env(tmp_path / "pycache")
    with gohelper.WriteObserver(tmp_path, env) as observer:
        before = time.time_ns()
        (tmp_path / "svid.pem").write_text("in place, as Go writes")
        (tmp_path / ".tmp").write_text("x")
        os.rename(tmp_path / ".tmp", tmp_path / "svid_key.pem")
        seen = observer.wait_for(["svid.pem", "svid_key.pem"], 10, "test writes")
        assert all(before <= t <= time.time_ns() for t in seen.values())


def test_figure_is_na_without_the_go_helper(tmp_path, monkeypatch):
    monkeypatch.setattr(gohelper, "GO_HELPER", tmp_path / "absent")
    rows = gohelper.run(None, QUICK)  # type: ignore[arg-type]  # not reached without Go
    assert [r.status for r in rows] == [NA]
    assert "build-peers" in rows[0].measured
