"""The benchmark's own parts (bench/): statistics, the inotify observer, the signal child.

These check that the instruments measure what they claim; they time nothing. The figures
themselves run only in `python -m bench` (and `--quick` in .ci/run).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
from util import ROOT, wait_for

from bench import child
from bench.stats import pairwise_ratios, percentile, spread
from bench.workspace import BenchError, HelperDaemon, Observer, subprocess_env
from helper.supervise.cmdargs import split_cmd_args


def test_percentile_is_nearest_rank_and_a_measured_value():
    values = [float(v) for v in range(1, 201)]
    assert percentile(values, 50) == 100.0
    assert percentile(values, 99) == 198.0
    assert percentile(values, 100) == 200.0
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError, match="no measurements"):
        percentile([], 50)


def test_spread_and_pairwise_ratios():
    result = spread([3.0, 1.0, 2.0])
    assert (result.median, result.low, result.high, result.n) == (2.0, 1.0, 3.0, 3)
    assert pairwise_ratios([1.0, 3.0], [2.0, 4.0]) == [0.5, 0.75]
    with pytest.raises(ValueError, match="unpaired"):
        pairwise_ratios([1.0], [1.0, 2.0])


@pytest.mark.parametrize("args", [
    ("/usr/bin/python3", "/tmp/a.sock", "SIGHUP"),
    ("/opt/my python/bin/python", 'say "hi"', "SIGUSR1"),
])
def test_child_cmd_args_split_back_as_the_helper_splits_them(args):
    assert split_cmd_args(child.go_cmd_args(*args)) == list(args)


def test_observer_reports_a_rename_with_a_wall_clock_time(tmp_path):
    env = subprocess_env(tmp_path / "pycache")
    with Observer(tmp_path, env) as observer:
        (tmp_path / ".tmp").write_text("x")
        before = time.time_ns()
        os.rename(tmp_path / ".tmp", tmp_path / "svid.pem")
        seen = observer.wait_for(["svid.pem"], 10, "test rename")
        after = time.time_ns()
        assert before <= seen["svid.pem"] <= after
        with pytest.raises(BenchError, match=r"key\.pem not written"):
            observer.wait_for(["key.pem"], 0.2, "nothing")


def test_signal_child_reports_ready_then_each_signal_and_stops_on_sigterm(tmp_path):
    path = str(tmp_path / "child.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(path)
        rx.settimeout(10)
        proc = subprocess.Popen([sys.executable, str(child.SCRIPT), path, "SIGUSR1"])
        try:
            assert rx.recv(256).decode() == f"ready {proc.pid}"
            for _ in range(2):
                sent = time.time_ns()
                proc.send_signal(signal.SIGUSR1)
                kind, stamp = rx.recv(256).decode().split()
                assert kind == "signal"
                assert sent <= int(stamp) <= time.time_ns()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def test_child_figure_gives_a_reason_when_the_helper_starts_no_child(tmp_path):
    config = tmp_path / "bad.conf"
    config.write_text("no_such_key = 1\n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(str(tmp_path / "child.sock"))
        env = subprocess_env(tmp_path / "pycache")
        with HelperDaemon(config, env, tmp_path / "helper.log") as helper:
            reason = child.wait_for_child(rx, helper, timeout=30)
    assert isinstance(reason, str)
    assert reason.startswith("helper exited with 2")


def test_subprocess_env_runs_this_tree_with_bytecode_caching(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    env = subprocess_env(tmp_path / "pycache")
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert env["PYTHONPYCACHEPREFIX"] == str(tmp_path / "pycache")
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)


def test_idle_wakeups_count_context_switches_per_thread_name():
    """A process blocked without a timeout adds no context switches; one that polls every
    10 ms adds one per poll at least (the idle figure's wakeups)."""
    from bench.idle import thread_stats

    blocked = subprocess.Popen([sys.executable, "-c",
                                "import sys\nprint('ready', flush=True)\nsys.stdin.read()"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    polling = subprocess.Popen([sys.executable, "-c",
                                "import time\nwhile True: time.sleep(0.01)"])
    try:
        def switches(pid):
            return sum(s.switches for s in thread_stats(pid).values())

        assert blocked.stdout is not None
        assert blocked.stdout.readline() == b"ready\n"
        process = psutil.Process(blocked.pid)
        wait_for(lambda: process.status() == psutil.STATUS_SLEEPING, 20,
                 "the process blocked in read()")
        before = switches(blocked.pid), switches(polling.pid)
        time.sleep(0.5)  # the measurement window
        after = switches(blocked.pid), switches(polling.pid)
        stats = thread_stats(blocked.pid)
    finally:
        polling.kill()
        assert blocked.stdin is not None
        blocked.stdin.close()
        blocked.wait(10)
        polling.wait(10)
        assert blocked.stdout is not None
        blocked.stdout.close()
    assert after[0] - before[0] == 0
    assert after[1] - before[1] >= 10
    assert sum(s.count for s in stats.values()) == 1
