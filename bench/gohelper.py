"""The Go spiffe-helper as a column: the same figures for both helpers, side by side.

When tests/interop/build-peers has built the Go spiffe-helper (v0.11.0), this figure runs it
and ours against the same dev-agent with the same helper.conf: one-shot wall time (runs
alternate Go, ours, Go, ...), rotation push -> files on disk p50/p99, and an idle daemon's
CPU, wakeups per second and RSS. Without the binary it is one n/a row.

The Go helper rewrites its files in place (open, truncate, write, close), ours renames a new
file into place; so "on disk" is the later of IN_CLOSE_WRITE and IN_MOVED_TO of the SVID and
the key, whichever the helper does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

from bench.idle import SETTLE_S, ThreadSample, thread_stats
from bench.observe import _exit_when_stdin_closes
from bench.plan import Plan
from bench.report import NA, Row, mib, ms
from bench.rotation import GAP_S
from bench.stats import pairwise_ratios, percentile, spread
from bench.workspace import (
    EVENT_TIMEOUT,
    FILES,
    KEY,
    START_TIMEOUT,
    SVID,
    BenchError,
    Observer,
    Workspace,
)

FIGURE = "Go spiffe-helper v0.11.0 beside this helper"
PEERS = Path(os.environ.get("SPIFFE_HELPER_PEERS", "/var/cache/spiffe-helper-peers"))
GO_HELPER = PEERS / "spire-v1.13.3-gohelper-v0.11.0" / "bin" / "spiffe-helper"
IN_CLOSE_WRITE = 0x00000008


def go_helper() -> Path | None:
    return GO_HELPER if os.access(GO_HELPER, os.X_OK) else None


class WriteObserver(Observer):
    """bench/observe.py, but also reporting files closed after writing (Go's in-place
    writes), through `python -m bench.gohelper DIR`."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.gohelper", str(directory)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        self._buffer = b""
        self.renames: Counter[str] = Counter()
        if self._line(START_TIMEOUT) != "ready":
            self.close()
            raise BenchError("observer did not start")


class Daemon:
    """A helper daemon (either one), logging to a file; stopped on exit."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=env)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _commands(ws: Workspace, go: Path, name: str, cert_dir: Path) -> dict[str, list[str]]:
    config = ws.write_config(f"{name}.conf", cert_dir)
    return {"go": [str(go), "-config", str(config)],
            "ours": [sys.executable, "-m", "helper", "-config", str(config)]}


def _one_shot(ws: Workspace, go: Path, plan: Plan) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"go": [], "ours": []}
    dirs = {who: ws.new_dir(f"go-oneshot-{who}") for who in times}
    commands = {who: _commands(ws, go, f"go-oneshot-{who}", dirs[who])[who] for who in times}
    for run in range(plan.oneshot_pairs + 1):  # the first pair is untimed (caches)
        for who in ("go", "ours"):
            for name in FILES:
                (dirs[who] / name).unlink(missing_ok=True)
            start = time.perf_counter()
            done = subprocess.run([*commands[who], "-daemon-mode=false"], env=ws.env,
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                                  check=False)
            elapsed = time.perf_counter() - start
            if done.returncode != 0 or not all((dirs[who] / n).is_file() for n in FILES):
                tail = done.stderr.decode(errors="replace").strip().splitlines()[-2:]
                raise BenchError(f"{who} one-shot exited {done.returncode}: {tail}")
            if run:
                times[who].append(elapsed)
    return times


def _daemon(ws: Workspace, go: Path, who: str, plan: Plan) -> dict[str, float]:
    """Rotation latencies and idle figures of one helper daemon."""
    certs = ws.new_dir(f"go-daemon-{who}")
    argv = _commands(ws, go, f"go-daemon-{who}", certs)[who]
    observer = WriteObserver(certs, ws.env)
    daemon = Daemon(argv, ws.env, ws.dir / f"go-daemon-{who}.log")
    try:
        observer.wait_for((SVID, KEY), START_TIMEOUT, f"{who} start", daemon)  # type: ignore[arg-type]
        samples = []
        for n in range(plan.warmup_rotations + plan.rotations):
            time.sleep(GAP_S)
            observer.drain()
            ws.agent.rotate()
            pushed = ws.last_push_ns()
            seen = observer.wait_for((SVID, KEY), EVENT_TIMEOUT, f"{who} rotation",
                                     daemon)  # type: ignore[arg-type]
            if n >= plan.warmup_rotations:
                samples.append((max(seen.values()) - pushed) / 1e6)
        process = psutil.Process(daemon.pid)
        time.sleep(SETTLE_S)
        before = thread_stats(daemon.pid)
        cpu0, wall0 = process.cpu_times(), time.monotonic()
        time.sleep(plan.idle_seconds)
        cpu1, wall = process.cpu_times(), time.monotonic() - wall0
        after = thread_stats(daemon.pid)
        rss = process.memory_info().rss
        if not daemon.alive():
            raise BenchError(f"{who} daemon exited: {daemon.log_tail()}")
    finally:
        daemon.stop()
        observer.close()
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall * 100
    wakeups = sum(a.switches - before.get(name, ThreadSample()).switches
                  for name, a in after.items()) / wall
    return {"p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99),
            "idle_cpu_percent": cpu, "wakeups_per_s": wakeups, "rss": rss}


def run(ws: Workspace, plan: Plan) -> list[Row]:
    go = go_helper()
    if go is None:
        return [Row(FIGURE, f"n/a ({GO_HELPER} not built: tests/interop/build-peers)", "", NA)]
    times = _one_shot(ws, go, plan)
    daemons = {who: _daemon(ws, go, who, plan) for who in ("go", "ours")}
    ratio = spread(pairwise_ratios(times["ours"], times["go"]))
    g, o = daemons["go"], daemons["ours"]
    data = {"oneshot_s": {k: spread(v).as_dict() for k, v in times.items()}, **{
        f"{who}_{k}": v for who, d in daemons.items() for k, v in d.items()}}
    info = "Go / ours, same dev-agent and config"

    def row(figure: str, go_text: str, ours_text: str, ours_value: float,
            go_value: float) -> Row:
        ratio = f" (ours/Go {ours_value / go_value:.2f}×)" if go_value >= 0.01 else ""
        return Row(f"vs Go: {figure}", f"Go {go_text}, ours {ours_text}{ratio}", info,
                   "info", data)

    go_med, ours_med = spread(times["go"]).median, spread(times["ours"]).median
    return [
        Row("vs Go: one-shot start → files → exit",
            f"Go {ms(go_med)}, ours {ms(ours_med)} (ours/Go {ratio.median:.2f}×, "
            f"min {ratio.low:.2f}, max {ratio.high:.2f})", info, "info", data),
        row("rotation push → files on disk, p50", f"{g['p50_ms']:.1f} ms",
            f"{o['p50_ms']:.1f} ms", o["p50_ms"], g["p50_ms"]),
        row("rotation push → files on disk, p99", f"{g['p99_ms']:.1f} ms",
            f"{o['p99_ms']:.1f} ms", o["p99_ms"], g["p99_ms"]),
        row(f"idle CPU over {plan.idle_seconds:g} s", f"{g['idle_cpu_percent']:.3f} %",
            f"{o['idle_cpu_percent']:.3f} %", o["idle_cpu_percent"], g["idle_cpu_percent"]),
        row("idle wakeups/s (all threads)", f"{g['wakeups_per_s']:.2f}",
            f"{o['wakeups_per_s']:.2f}", o["wakeups_per_s"], g["wakeups_per_s"]),
        row("idle RSS", mib(g["rss"]), mib(o["rss"]), o["rss"], g["rss"]),
    ]


def main(argv: list[str]) -> int:
    """`python -m bench.gohelper DIR`: bench/observe.py, with IN_CLOSE_WRITE as well."""
    from bench.inotify import IN_MOVED_TO, Inotify

    with Inotify(argv[0], IN_MOVED_TO | IN_CLOSE_WRITE) as watch:
        threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        while True:
            events = watch.read()
            now = time.time_ns()
            sys.stdout.write("".join(f"{name} {now}\n" for _mask, name in events))
            sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
