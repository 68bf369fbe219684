"""A push storm (issue 8, item 6): 1000 rotations as fast as the agent can mint.

Memory stays flat (RSS, bounded growth after a warm-up), reloads are coalesced (the child
gets a handful of renew signals, the last one after the last write), and the files end equal
to the last push, a consistent set, with no temp file left.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil
from relutil import (
    RECORDER,
    cmd_lines,
    consistent_serial,
    files_equal_message,
    first_write,
    records,
    temps,
    write_conf,
)
from util import HelperProcess, wait_for

from helper.devagent import DevAgentThread

ROTATIONS = 1000
WARM_UP = 100
SAMPLES = (WARM_UP, 400, 700, ROTATIONS)
RSS_GROWTH_LIMIT = 4 * 1024 * 1024  # bytes, from the warm-up to the end
DEBOUNCE = 0.5  # reload_debounce, the default


def test_push_storm_keeps_memory_flat_and_ends_on_the_last_push(
        tmp_path: Path, certs: Path, agent: DevAgentThread) -> None:
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent.socket_path, certs,
                      cmd_lines(RECORDER, "--record", str(rec)) + 'renew_signal = "SIGHUP"\n'
                      f"reload_debounce = {DEBOUNCE}\n")
    with HelperProcess("-config", str(conf), log=tmp_path / "helper.log") as helper:
        first_write(certs)
        wait_for(lambda: records(rec, "ready"), 10, "the child")
        agent.wait_streams(1)
        proc = psutil.Process(helper.proc.pid)
        rss: dict[int, int] = {}
        began = time.monotonic()
        for n in range(1, ROTATIONS + 1):
            agent.rotate()
            if n in SAMPLES:
                rss[n] = proc.memory_info().rss
        last = agent.current
        # superseded snapshots are skipped, not written one by one: the last push lands at once
        wait_for(lambda: files_equal_message(certs, last), 5, "the last push on disk")
        storm = time.monotonic() - began
        written = (certs / "svid.pem").stat().st_mtime
        rss["end"] = proc.memory_info().rss
        # coalesced reloads: one per debounce window at most, the last after the last write
        wait_for(lambda: any(r["time"] >= written for r in records(rec, "signal")), 10,
                 "a renew signal after the last write")
        signals = [r["name"] for r in records(rec, "signal")]
        assert set(signals) == {"SIGHUP"}
        assert len(signals) <= storm / DEBOUNCE + 2, (storm, len(signals))
        assert consistent_serial(certs) is not None
        assert temps(certs) == []
        growth = max(rss.values()) - rss[WARM_UP]
        assert growth < RSS_GROWTH_LIMIT, {k: v // 1024 for k, v in rss.items()}
        assert helper.proc.poll() is None
        updates = helper.output().count("file(s) updated")
        assert updates > 1, helper.output()[-2000:]
        assert helper.stop() == 0
