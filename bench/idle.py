"""Idle daemon: CPU and memory of a helper that has written its files and gets no pushes.

CPU is psutil's cpu_times (user + system, every thread) over the whole window, also
reported per sub-window. Wakeups come from /proc/PID/task/*/schedstat (times each
thread was put on a CPU), split between the helper's Python threads and gRPC's own.
"""

from __future__ import annotations

import os
import time

import psutil

from bench.plan import Plan
from bench.report import Row, mib, verdict
from bench.workspace import BenchError, Workspace, started

CPU_TARGET_PERCENT = 0.1
RSS_TARGET = 45 * 2**20
SETTLE_S = 1.0


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def thread_wakeups(pid: int) -> dict[str, int]:
    """Times each thread (by name) has been scheduled so far."""
    counts: dict[str, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as comm:
                name = comm.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as stat:
                slices = int(stat.read().split()[2])
        except (OSError, IndexError, ValueError):
            continue
        counts[name] = counts.get(name, 0) + slices
    return counts


def run(ws: Workspace, plan: Plan) -> list[Row]:
    certs = ws.new_dir("idle")
    config = ws.write_config("idle.conf", certs)
    helper, observer = started(ws, config, "idle.log", certs)
    with helper, observer:
        process = psutil.Process(helper.pid)
        time.sleep(SETTLE_S)  # let start-up work (log flushes, first GC) finish
        window = plan.idle_seconds / plan.idle_windows
        wakeups_before = thread_wakeups(helper.pid)
        start_wall, start_cpu = time.monotonic(), _cpu_seconds(process)
        last_cpu, windows = start_cpu, []
        for _ in range(plan.idle_windows):
            time.sleep(window)
            cpu = _cpu_seconds(process)
            windows.append((cpu - last_cpu) / window * 100)
            last_cpu = cpu
        wall = time.monotonic() - start_wall
        wakeups_after = thread_wakeups(helper.pid)
        memory = process.memory_full_info()
        if not helper.alive():
            raise BenchError(f"helper exited while idle: {helper.log_tail()}")
    cpu_percent = (last_cpu - start_cpu) / wall * 100
    wakeups = {name: wakeups_after[name] - wakeups_before.get(name, 0) for name in wakeups_after}
    python_wakeups = wakeups.get("python", 0)
    other_wakeups = sum(v for k, v in wakeups.items() if k != "python")
    data = {"seconds": wall, "cpu_percent": cpu_percent, "window_cpu_percent": windows,
            "wakeups_by_thread": wakeups, "rss": memory.rss, "uss": memory.uss,
            "pss": getattr(memory, "pss", None)}
    return [
        Row(f"idle daemon: CPU over {plan.idle_seconds:g} s",
            f"{cpu_percent:.3f} % ({len(windows)} windows: {min(windows):.2f}–"
            f"{max(windows):.2f} %); wakeups: Python threads {python_wakeups}, "
            f"gRPC threads {other_wakeups / wall:.1f}/s",
            f"≤ {CPU_TARGET_PERCENT:g} %", verdict(cpu_percent <= CPU_TARGET_PERCENT), data),
        Row("idle daemon: RSS", f"{mib(memory.rss)} (USS {mib(memory.uss)})",
            f"≤ {mib(RSS_TARGET)}", verdict(memory.rss <= RSS_TARGET), data),
    ]
