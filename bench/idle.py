"""Idle daemon: CPU and memory of a helper that has written its files and gets no pushes.

CPU is psutil's cpu_times (user + system, every thread) over the whole window, also
reported per sub-window. Wakeups come from /proc/PID/task/*/schedstat (times each
thread was put on a CPU), split between the helper's Python threads and gRPC's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from bench.plan import Plan
from bench.report import Row, mib, verdict
from bench.workspace import BenchError, Workspace, started

CPU_TARGET_PERCENT = 0.1
RSS_TARGET = 45 * 2**20
SETTLE_S = 2.0


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def thread_stats(pid: int) -> dict[str, tuple[int, int]]:
    """Per thread name: (CPU ns, times scheduled) so far, from schedstat (ns-exact, where
    psutil's cpu_times count 10 ms ticks)."""
    stats: dict[str, tuple[int, int]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as comm:
                name = comm.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as stat:
                fields = stat.read().split()
            cpu_ns, slices = int(fields[0]), int(fields[2])
        except (OSError, IndexError, ValueError):
            continue
        before = stats.get(name, (0, 0))
        stats[name] = (before[0] + cpu_ns, before[1] + slices)
    return stats


FLOOR_IMPORTS = ("asyncio", "grpc.aio", "cryptography.x509",
                 "cryptography.hazmat.primitives.serialization", "helper._proto.workload_pb2")
_RSS_OF_SELF = ("import re\nwith open('/proc/self/status') as f:\n"
                "    print(int(re.search(r'VmRSS:\\s+(\\d+) kB', f.read()).group(1)) * 1024)")


def rss_of_python(env: dict[str, str], imports: tuple[str, ...] = ()) -> int:
    """RSS of a fresh `python` that imported `imports` (as psutil reads it: VmRSS)."""
    code = "".join(f"import {name}\n" for name in imports) + _RSS_OF_SELF
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise BenchError(f"cannot measure a bare python's RSS: {done.stderr.strip()}")
    return int(done.stdout)


def run(ws: Workspace, plan: Plan) -> list[Row]:
    certs = ws.new_dir("idle")
    config = ws.write_config("idle.conf", certs)
    helper, observer = started(ws, config, "idle.log", certs)
    with helper, observer:
        process = psutil.Process(helper.pid)
        time.sleep(SETTLE_S)  # let start-up work (log flushes, first GC) finish
        window = plan.idle_seconds / plan.idle_windows
        threads_before = thread_stats(helper.pid)
        start_wall, start_cpu = time.monotonic(), _cpu_seconds(process)
        last_cpu, windows = start_cpu, []
        for _ in range(plan.idle_windows):
            time.sleep(window)
            cpu = _cpu_seconds(process)
            windows.append((cpu - last_cpu) / window * 100)
            last_cpu = cpu
        wall = time.monotonic() - start_wall
        threads_after = thread_stats(helper.pid)
        memory = process.memory_full_info()
        if not helper.alive():
            raise BenchError(f"helper exited while idle: {helper.log_tail()}")
    bare, floor = rss_of_python(ws.env), rss_of_python(ws.env, FLOOR_IMPORTS)
    cpu_percent = (last_cpu - start_cpu) / wall * 100
    wakeups = {name: after[1] - threads_before.get(name, (0, 0))[1]
               for name, after in threads_after.items()}
    exact_cpu_ns = sum(after[0] - threads_before.get(name, (0, 0))[0]
                       for name, after in threads_after.items())
    exact_percent = exact_cpu_ns / 1e9 / wall * 100
    python_wakeups = wakeups.get("python", 0)
    other_wakeups = sum(v for k, v in wakeups.items() if k != "python")
    data = {"seconds": wall, "cpu_percent": cpu_percent, "window_cpu_percent": windows,
            "cpu_percent_schedstat": exact_percent,
            "wakeups_by_thread": wakeups, "rss": memory.rss, "uss": memory.uss,
            "pss": getattr(memory, "pss", None), "rss_bare_python": bare,
            "rss_dependencies_imported": floor}
    return [
        Row(f"idle daemon: CPU over {plan.idle_seconds:g} s",
            f"{cpu_percent:.3f} % (schedstat: {exact_percent:.3f} %; {len(windows)} windows: "
            f"{min(windows):.2f}–{max(windows):.2f} %); wakeups: Python threads "
            f"{python_wakeups}, "
            f"gRPC threads {other_wakeups / wall:.1f}/s",
            f"≤ {CPU_TARGET_PERCENT:g} %", verdict(cpu_percent <= CPU_TARGET_PERCENT), data),
        Row("idle daemon: RSS", f"{mib(memory.rss)} (USS {mib(memory.uss)}); a python that "
            f"only imports asyncio, grpc, cryptography and protobuf: {mib(floor)}, "
            f"an empty one: {mib(bare)}",
            f"≤ {mib(RSS_TARGET)}", verdict(memory.rss <= RSS_TARGET), data),
    ]
