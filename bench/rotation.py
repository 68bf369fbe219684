"""Rotation latency and endurance: the dev-agent rotates the SVID, the helper rewrites.

Latency is from the agent's own publish timestamp (DevAgent.push_times, wall clock, taken
before gRPC serialises the message) to the moment inotify reports the new SVID and key
renamed into place, whichever comes last: the whole new set is on disk. The bundle does
not change on an SVID rotation, so the helper leaves it alone. Rotations are sequential:
the next push waits until the previous one is on disk.
"""

from __future__ import annotations

import os
import time

import psutil

from bench.plan import Plan
from bench.report import Row, mib, verdict
from bench.stats import percentile
from bench.workspace import (
    BUNDLE,
    EVENT_TIMEOUT,
    KEY,
    SVID,
    HelperDaemon,
    Observer,
    Workspace,
    started,
)

P50_TARGET_MS, P99_TARGET_MS = 5.0, 20.0
GAP_S = 0.025  # between measured rotations (see rotate_and_wait)
RSS_GROWTH_TARGET = 5 * 2**20


def rotate_and_wait(ws: Workspace, observer: Observer, what: str, helper: HelperDaemon,
                    gap: float = 0.0) -> float:
    """One rotation; seconds from the agent's push to the new set on disk.

    `gap`: seconds to let pass first, so that the push does not land while the helper is
    still finishing the previous write (syncing the directory, logging). Real rotations
    are minutes apart; back-to-back ones would measure a queue instead.
    """
    if gap:
        time.sleep(gap)
    observer.drain()
    ws.agent.rotate()
    pushed = ws.last_push_ns()
    seen = observer.wait_for((SVID, KEY), EVENT_TIMEOUT, what, helper)
    return (max(seen.values()) - pushed) / 1e9


def latency_rows(figure: str, samples_s: list[float], p50_target_ms: float | None,
                 p99_target_ms: float) -> list[Row]:
    samples_ms = [s * 1000 for s in samples_s]
    p50, p99 = percentile(samples_ms, 50), percentile(samples_ms, 99)
    data = {"samples": len(samples_ms), "p50_ms": p50, "p99_ms": p99,
            "min_ms": min(samples_ms), "max_ms": max(samples_ms)}
    rows = []
    if p50_target_ms is not None:
        rows.append(Row(f"{figure}, p50", f"{p50:.1f} ms (min {min(samples_ms):.1f}, "
                        f"{len(samples_ms)} rotations)", f"≤ {p50_target_ms:g} ms",
                        verdict(p50 <= p50_target_ms), data))
    rows.append(Row(f"{figure}, p99", f"{p99:.1f} ms (max {max(samples_ms):.1f}, "
                    f"p50 {p50:.1f})", f"≤ {p99_target_ms:g} ms",
                    verdict(p99 <= p99_target_ms), data))
    return rows


def latency(ws: Workspace, plan: Plan) -> list[Row]:
    certs = ws.new_dir("rotation")
    config = ws.write_config("rotation.conf", certs)
    helper, observer = started(ws, config, "rotation.log", certs)
    with helper, observer:
        for _ in range(plan.warmup_rotations):
            rotate_and_wait(ws, observer, "warm-up rotation", helper)
        samples = [rotate_and_wait(ws, observer, "rotation", helper, GAP_S)
                   for _ in range(plan.rotations)]
        time.sleep(GAP_S)
        observer.drain()
    rows = latency_rows("rotation: push → files renamed into place", samples,
                        P50_TARGET_MS, P99_TARGET_MS)
    # The bundle does not change on an SVID rotation: the writer must skip it (digest).
    rows[0].data["bundle_rewrites"] = observer.renames[BUNDLE] - 1  # minus the first write
    return rows


def open_fds(pid: int) -> int:
    """Open fds of `pid` once settled: the least of a few readings 20 ms apart, so the
    directory fd the helper opens for a moment to fsync after a rename is not counted."""
    readings = []
    for attempt in range(3):
        if attempt:
            time.sleep(0.02)
        readings.append(len(os.listdir(f"/proc/{pid}/fd")))
    return min(readings)


def endurance(ws: Workspace, plan: Plan) -> list[Row]:
    certs = ws.new_dir("endurance")
    config = ws.write_config("endurance.conf", certs)
    helper, observer = started(ws, config, "endurance.log", certs)
    with helper, observer:
        process = psutil.Process(helper.pid)
        for _ in range(max(plan.warmup_rotations, plan.endurance_rotations // 50)):
            rotate_and_wait(ws, observer, "warm-up rotation", helper)
        rss = [process.memory_info().rss]
        fds = [open_fds(helper.pid)]
        step = max(1, plan.endurance_rotations // 10)
        for done in range(1, plan.endurance_rotations + 1):
            rotate_and_wait(ws, observer, f"endurance rotation {done}", helper)
            if done % step == 0:
                rss.append(process.memory_info().rss)
                fds.append(open_fds(helper.pid))
    growth = rss[-1] - rss[0]
    n = plan.endurance_rotations
    data = {"rotations": n, "rss_bytes": rss, "fds": fds}
    return [
        Row(f"endurance: RSS growth over {n:,} rotations",
            f"{growth / 2**20:+.1f} MiB ({mib(rss[0])} → {mib(rss[-1])}, "
            f"peak {mib(max(rss))})", "≤ 5 MiB", verdict(growth <= RSS_GROWTH_TARGET), data),
        Row(f"endurance: open fds over {n:,} rotations",
            f"{fds[0]} → {fds[-1]} (max {max(fds)})", "no growth",
            verdict(fds[-1] <= fds[0]), data),
    ]
