"""`python -m bench [--quick] [--json] [--only FIGURE,...] [--keep]`.

Starts the dev-agent in this process, runs each figure against fresh helper processes and
prints `figure | measured | target | pass/miss`. A missed target is a result, not a
failure: the exit status is 0 unless the bench itself broke (then 1, with the reason).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import child, gohelper, idle, large, oneshot, rotation
from bench.plan import FULL, QUICK, Plan
from bench.report import ERROR, MISS, NA, Row, json_report, markdown_table, ms
from bench.stats import Spread, spread
from bench.workspace import BenchError, Workspace

Figure = Callable[[Workspace, Plan], list[Row]]

# Run order: the large snapshot last but one changes the agent's state the most;
# endurance, the longest, last.
FIGURES: dict[str, tuple[str, Figure]] = {
    "oneshot": (oneshot.FIGURE, oneshot.run),
    "rotation": ("rotation latency", rotation.latency),
    "child": (child.FIGURE, child.run),
    "idle": ("idle daemon", idle.run),
    # The Go spiffe-helper beside ours, when tests/interop/build-peers has built it.
    "gohelper": (gohelper.FIGURE, gohelper.run),
    "large": ("large snapshot", large.run),
    "endurance": ("endurance", rotation.endurance),
}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def filesystem_of(path: Path) -> str:
    """The type of the file system holding `path` (longest mount point in /proc/mounts)."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                point = fields[1]
                inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
                if inside and len(point) > len(best):
                    best, kind = point, fields[2]
    except OSError:
        pass
    return kind


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def fsync_cost(directory: Path, runs: int = 21) -> Spread:
    """Seconds to create, fill, fsync and rename a 2 KiB file in `directory`: the floor
    under every rotation, which fsyncs each new file before renaming it into place."""
    samples = []
    for i in range(runs):
        temp, final = directory / f".fsync-probe-{i}", directory / "fsync-probe"
        start = time.perf_counter()
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"x" * 2048)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, final)
        samples.append(time.perf_counter() - start)
    (directory / "fsync-probe").unlink()
    return spread(samples)


def machine(workspace: Path) -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "filesystem": filesystem_of(workspace),
        "fsync_s": fsync_cost(workspace).as_dict(),
        "loadavg_at_start": os.getloadavg()[0],
        "packages": {p: _version(p) for p in ("grpclib", "h2", "grpcio", "protobuf",
                                              "cryptography", "spiffe")},
    }


def machine_line(info: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    fsync = info["fsync_s"]
    return (f"{info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
            f"Linux {info['kernel']}, files on {info['filesystem']} (write+fsync+rename of "
            f"a small file: median {ms(fsync['median'])}, max {ms(fsync['max'])}); "
            f"load average {info['loadavg_at_start']:.2f} at start; {packages}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: few repetitions, short windows (< 60 s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--only", default="", metavar="FIGURES",
                        help=f"comma-separated subset of: {', '.join(FIGURES)}")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    parser.add_argument("--dir", type=Path, default=None, metavar="DIR",
                        help="make the temp dir in DIR, e.g. a tmpfs (default: $TMPDIR)")
    args = parser.parse_args(argv)
    unknown = set(filter(None, args.only.split(","))) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figure(s): {', '.join(sorted(unknown))}")
    return args


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    chosen = [key for key in FIGURES if not args.only or key in args.only.split(",")]
    started = time.monotonic()
    rows: list[Row] = []
    broken = False
    with Workspace(keep=args.keep, parent=args.dir) as ws:
        info = machine(ws.dir)
        progress(f"{plan.name} run in {ws.dir}; {machine_line(info)}")
        try:
            ws.warm_up()
        except BenchError as exc:
            progress(f"error: {exc}")
            return 1
        for key in chosen:
            title, figure = FIGURES[key]
            progress(f"{title} ...")
            begun = time.monotonic()
            try:
                rows.extend(figure(ws, plan))
            except Exception as exc:  # the bench broke: report it, keep going, exit 1
                broken = True
                traceback.print_exc(file=sys.stderr)
                rows.append(Row(title, f"error: {exc}", "", ERROR))
            progress(f"{title}: {time.monotonic() - begun:.1f} s")
    info["loadavg_at_end"] = os.getloadavg()[0]
    meta = {"mode": plan.name, "machine": info, "seconds": round(time.monotonic() - started, 1)}
    if args.json:
        print(json_report(rows, meta))
    else:
        print(markdown_table(rows))
        print(f"\n{plan.name} run, {meta['seconds']} s on {machine_line(info)}; "
              f"load average {info['loadavg_at_end']:.2f} at the end")
    for row in rows:
        if row.status in (MISS, NA, ERROR):
            progress(f"{row.status}: {row.figure}: {row.measured} (target {row.target})")
    if args.keep:
        progress(f"kept {ws.dir}")
    return 1 if broken else 0
