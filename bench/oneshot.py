"""One-shot start -> files -> exit: the helper against a naive py-spiffe script.

Both run as fresh `python` processes against the same dev-agent and write the same three
files into an emptied directory; each is timed from spawn to exit. Runs alternate
helper, naive, helper, naive, ... and the figure is the median of the pairwise ratios.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

from bench.plan import Plan
from bench.report import NA, Row, ms, verdict
from bench.stats import pairwise_ratios, spread
from bench.workspace import FILES, BenchError, Workspace

FIGURE = "one-shot start → files → exit"
TARGET_RATIO = 0.8
TARGET = f"≤ {TARGET_RATIO}× the naive py-spiffe script"
NAIVE_SCRIPT = Path(__file__).with_name("naive_pyspiffe.py")
RUN_TIMEOUT = 60.0
NO_PYSPIFFE = "n/a (pip install '.[bench]')"


def have_pyspiffe() -> bool:
    return importlib.util.find_spec("spiffe") is not None


def timed_run(cmd: list[str], env: dict[str, str], out_dir: Path, what: str) -> float:
    """Seconds from spawn to exit; the three files must be there afterwards."""
    for name in FILES:
        (out_dir / name).unlink(missing_ok=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=RUN_TIMEOUT, check=False)
    elapsed = time.perf_counter() - start
    missing = [name for name in FILES if not (out_dir / name).is_file()]
    if done.returncode != 0 or missing:
        tail = " | ".join(done.stderr.decode(errors="replace").strip().splitlines()[-3:])
        raise BenchError(f"{what} exited {done.returncode}, missing {missing}: {tail}")
    return elapsed


def run(ws: Workspace, plan: Plan) -> list[Row]:
    helper_dir, naive_dir = ws.new_dir("oneshot-helper"), ws.new_dir("oneshot-naive")
    config = ws.write_config("oneshot.conf", helper_dir)
    helper_cmd = [sys.executable, "-m", "helper", "-config", str(config), "-daemon-mode=false"]
    naive_cmd = [sys.executable, str(NAIVE_SCRIPT), str(naive_dir)]
    naive_env = {**ws.env, "SPIFFE_ENDPOINT_SOCKET": ws.agent.address}
    naive = have_pyspiffe()

    # One untimed run each: fills the bytecode cache and the page cache.
    timed_run(helper_cmd, ws.env, helper_dir, "helper")
    if naive:
        timed_run(naive_cmd, naive_env, naive_dir, "naive script")
    helper_times: list[float] = []
    naive_times: list[float] = []
    for _ in range(plan.oneshot_pairs):
        helper_times.append(timed_run(helper_cmd, ws.env, helper_dir, "helper"))
        if naive:
            naive_times.append(timed_run(naive_cmd, naive_env, naive_dir, "naive script"))

    helper_spread = spread(helper_times)
    data: dict[str, object] = {"helper_s": helper_spread.as_dict(), "pairs": plan.oneshot_pairs}
    if not naive:
        measured = (f"helper {ms(helper_spread.median)} (min {ms(helper_spread.low)}, "
                    f"max {ms(helper_spread.high)}); naive script {NO_PYSPIFFE}")
        return [Row(FIGURE, measured, TARGET, NA, data)]
    ratio = spread(pairwise_ratios(helper_times, naive_times))
    naive_spread = spread(naive_times)
    data.update(ratio=ratio.as_dict(), naive_s=naive_spread.as_dict())
    measured = (f"{ratio.median:.2f}× (min {ratio.low:.2f}, max {ratio.high:.2f}); "
                f"helper {ms(helper_spread.median)} vs naive {ms(naive_spread.median)}")
    return [Row(FIGURE, measured, TARGET, verdict(ratio.median <= TARGET_RATIO), data)]
