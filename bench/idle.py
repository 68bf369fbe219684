"""Idle daemons side by side: the helper and a naive py-spiffe watcher, both holding their
stream open while the agent pushes nothing, measured over the same window.

Per process: CPU (psutil's cpu_times, 10 ms ticks, and schedstat, ns-exact), wakeups per
second per thread name (voluntary + nonvoluntary context switches from
/proc/PID/task/*/status: each is one time the thread went to sleep or was preempted, so a
thread that never wakes adds 0 however loaded the machine is), thread count, RSS and USS.
The helper runs with X.509 outputs and one JWT-SVID (1 h TTL: its refresh, at half the
TTL, is outside the window).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.oneshot import NO_PYSPIFFE, have_pyspiffe
from bench.plan import Plan
from bench.report import Row, mib, verdict
from bench.workspace import FILES, START_TIMEOUT, BenchError, Workspace, started

CPU_TARGET_PERCENT = 0.01
RSS_TARGET = 40 * 2**20
THREADS_TARGET = 2
WAKEUPS_TARGET = 0.0  # per second, outside a scheduled JWT refresh
SETTLE_S = 2.0
WATCHER_SCRIPT = Path(__file__).with_name("naive_watcher.py")
JWT_CONFIG = 'jwt_svids = [{jwt_audience = "bench", jwt_svid_file_name = "jwt.token"}]\n'

FLOOR_IMPORTS = ("asyncio", "grpclib.client", "cryptography.x509",
                 "cryptography.hazmat.primitives.serialization", "helper._proto.workload_pb2")
_RSS_OF_SELF = ("import re\nwith open('/proc/self/status') as f:\n"
                "    print(int(re.search(r'VmRSS:\\s+(\\d+) kB', f.read()).group(1)) * 1024)")


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


@dataclass
class ThreadSample:
    cpu_ns: int = 0
    switches: int = 0  # voluntary + nonvoluntary context switches
    count: int = 0  # threads with this name


def thread_stats(pid: int) -> dict[str, ThreadSample]:
    """Per thread name: CPU ns (schedstat) and context switches so far, and how many."""
    stats: dict[str, ThreadSample] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/comm") as comm:
                name = comm.read().strip()
            with open(f"{base}/schedstat") as stat:
                cpu_ns = int(stat.read().split()[0])
            with open(f"{base}/status") as status:
                switches = sum(int(line.split()[1]) for line in status
                               if line.startswith(("voluntary_ctxt_switches",
                                                   "nonvoluntary_ctxt_switches")))
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
        sample = stats.setdefault(name, ThreadSample())
        sample.cpu_ns += cpu_ns
        sample.switches += switches
        sample.count += 1
    return stats


def rss_of_python(env: dict[str, str], imports: tuple[str, ...] = ()) -> int:
    """RSS of a fresh `python` that imported `imports` (as psutil reads it: VmRSS)."""
    code = "".join(f"import {name}\n" for name in imports) + _RSS_OF_SELF
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise BenchError(f"cannot measure a bare python's RSS: {done.stderr.strip()}")
    return int(done.stdout)


@dataclass
class Idle:
    """One idle daemon's figures over the window."""

    name: str
    pid: int
    process: psutil.Process = field(init=False)
    threads_before: dict[str, ThreadSample] = field(default_factory=dict)
    cpu_before: float = 0.0
    windows: list[float] = field(default_factory=list)
    last_cpu: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.process = psutil.Process(self.pid)

    def begin(self) -> None:
        self.threads_before = thread_stats(self.pid)
        self.cpu_before = self.last_cpu = _cpu_seconds(self.process)

    def window(self, seconds: float) -> None:
        cpu = _cpu_seconds(self.process)
        self.windows.append((cpu - self.last_cpu) / seconds * 100)
        self.last_cpu = cpu

    def end(self, wall: float) -> None:
        after = thread_stats(self.pid)
        memory = self.process.memory_full_info()
        wakeups = {name: (s.switches - self.threads_before.get(name, ThreadSample()).switches)
                   / wall for name, s in sorted(after.items())}
        exact_ns = sum(s.cpu_ns - self.threads_before.get(name, ThreadSample()).cpu_ns
                       for name, s in after.items())
        self.result = {
            "seconds": wall, "cpu_percent": (self.last_cpu - self.cpu_before) / wall * 100,
            "cpu_percent_schedstat": exact_ns / 1e9 / wall * 100,
            "window_cpu_percent": self.windows,
            "wakeups_per_s_by_thread": wakeups, "wakeups_per_s": sum(wakeups.values()),
            "threads": sum(s.count for s in after.values()),
            "threads_by_name": {name: s.count for name, s in sorted(after.items())},
            "rss": memory.rss, "uss": memory.uss, "pss": getattr(memory, "pss", None),
        }

    def wakeups_text(self) -> str:
        by_thread = self.result["wakeups_per_s_by_thread"]
        counts = self.result["threads_by_name"]
        parts = [f"{name}{'×' + str(counts[name]) if counts[name] > 1 else ''} {rate:.1f}"
                 for name, rate in by_thread.items()]
        return f"{self.result['wakeups_per_s']:.2f}/s ({', '.join(parts)})"


def start_watcher(ws: Workspace) -> tuple[subprocess.Popen[bytes], Path]:
    out = ws.new_dir("idle-watcher")
    log = ws.dir / "idle-watcher.log"
    env = {**ws.env, "SPIFFE_ENDPOINT_SOCKET": ws.agent.address}
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, str(WATCHER_SCRIPT), str(out)], env=env,
                                stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT
    while not all((out / name).is_file() for name in FILES):  # a bounded poll: it only writes
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise BenchError(f"naive watcher wrote no files: {log.read_text(errors='replace')}")
        time.sleep(0.05)
    return proc, log


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run(ws: Workspace, plan: Plan) -> list[Row]:
    certs = ws.new_dir("idle")
    config = ws.write_config("idle.conf", certs, JWT_CONFIG)
    helper, observer = started(ws, config, "idle.log", certs)
    watcher = None
    with helper, observer:
        try:
            daemons = [Idle("helper", helper.pid)]
            if have_pyspiffe():
                watcher, _ = start_watcher(ws)
                daemons.append(Idle("naive watcher", watcher.pid))
            time.sleep(SETTLE_S)  # let start-up work (log flushes, first GC) finish
            window = plan.idle_seconds / plan.idle_windows
            for daemon in daemons:
                daemon.begin()
            start_wall = time.monotonic()
            for _ in range(plan.idle_windows):
                time.sleep(window)
                for daemon in daemons:
                    daemon.window(window)
            wall = time.monotonic() - start_wall
            for daemon in daemons:
                daemon.end(wall)
            if not helper.alive():
                raise BenchError(f"helper exited while idle: {helper.log_tail()}")
        finally:
            if watcher is not None:
                stop(watcher)
    bare, floor = rss_of_python(ws.env), rss_of_python(ws.env, FLOOR_IMPORTS)
    ours = daemons[0].result
    data = {d.name: d.result for d in daemons}
    data.update(rss_bare_python=bare, rss_dependencies_imported=floor)
    naive = daemons[1].result if len(daemons) > 1 else None

    def side(text: str, other: str | None) -> str:
        return f"helper {text}; naive watcher {other if other is not None else NO_PYSPIFFE}"

    def cpu(r: dict[str, Any]) -> str:
        windows = r["window_cpu_percent"]
        return (f"{r['cpu_percent']:.3f} % (schedstat {r['cpu_percent_schedstat']:.4f} %; "
                f"windows {min(windows):.2f}–{max(windows):.2f} %)")

    naive_daemon = daemons[1] if len(daemons) > 1 else None
    return [
        Row(f"idle daemon: CPU over {plan.idle_seconds:g} s",
            side(cpu(ours), cpu(naive) if naive else None),
            f"≤ {CPU_TARGET_PERCENT:g} %",
            verdict(ours["cpu_percent_schedstat"] <= CPU_TARGET_PERCENT), data),
        Row("idle daemon: wakeups per thread",
            side(daemons[0].wakeups_text(),
                 naive_daemon.wakeups_text() if naive_daemon else None),
            "0/s", verdict(ours["wakeups_per_s"] <= WAKEUPS_TARGET), data),
        Row("idle daemon: threads",
            side(str(ours["threads"]), str(naive["threads"]) if naive else None),
            f"≤ {THREADS_TARGET}", verdict(ours["threads"] <= THREADS_TARGET), data),
        Row("idle daemon: RSS",
            side(f"{mib(ours['rss'])} (USS {mib(ours['uss'])})",
                 f"{mib(naive['rss'])} (USS {mib(naive['uss'])})" if naive else None)
            + f"; a python that only imports asyncio, grpclib, cryptography and protobuf: "
            f"{mib(floor)}, an empty one: {mib(bare)}",
            f"≤ {mib(RSS_TARGET)}", verdict(ours["rss"] <= RSS_TARGET), data),
    ]
