"""Rotation -> child signalled: push by the agent -> `renew_signal` received by `cmd`.

The helper runs bench/signal_child.py as `cmd` with `renew_signal = "SIGHUP"` and
`reload_debounce = 0`. The child reports `ready PID` and then, per signal, the wall-clock
ns at which sigwait() returned, over a datagram socket. The latency is that minus the
agent's publish timestamp.

This needs the process supervisor. When the helper does not start the child within a
bounded wait (a helper without the supervisor exits on the unknown `reload_debounce` key,
or never starts `cmd`), the figure is reported as n/a instead of failing the bench.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path

from bench.plan import Plan
from bench.report import NA, Row
from bench.rotation import GAP_S, latency_rows
from bench.workspace import EVENT_TIMEOUT, BenchError, HelperDaemon, Workspace, hcl_string

FIGURE = "rotation → child signalled"
P99_TARGET_MS = 30.0
NEEDS_SUPERVISOR = "n/a (needs the supervisor)"
SCRIPT = Path(__file__).with_name("signal_child.py")
RENEW_SIGNAL = "SIGHUP"


def go_cmd_args(*args: str) -> str:
    """`cmd_args` text that Go's encoding/csv rules (space separated) split into `args`."""
    return " ".join('"' + a.replace('"', '""') + '"' if (" " in a or '"' in a) else a
                    for a in args)


def child_config(ws: Workspace, cert_dir: Path, sock: Path) -> Path:
    extra = (f"cmd = {hcl_string(sys.executable)}\n"
             f"cmd_args = {hcl_string(go_cmd_args(str(SCRIPT), str(sock), RENEW_SIGNAL))}\n"
             f'renew_signal = "{RENEW_SIGNAL}"\n'
             "reload_debounce = 0\n")
    return ws.write_config("child.conf", cert_dir, extra)


def _receive(rx: socket.socket, timeout: float) -> str | None:
    rx.settimeout(max(timeout, 1e-6))
    try:
        return rx.recv(256).decode()
    except (TimeoutError, BlockingIOError):
        return None


def wait_for_child(rx: socket.socket, helper: HelperDaemon, timeout: float) -> int | str:
    """The child's PID once it reports ready, else why not (a reason string)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = _receive(rx, min(0.2, deadline - time.monotonic()))
        if message and message.startswith("ready "):
            return int(message.split()[1])
        if not helper.alive():
            return f"helper exited with {helper.proc.returncode}: {helper.log_tail(2)}"
    return f"the helper started no child within {timeout:g} s"


def _drain(rx: socket.socket) -> None:
    while _receive(rx, 0) is not None:
        pass


def signal_time_ns(rx: socket.socket, helper: HelperDaemon) -> int:
    deadline = time.monotonic() + EVENT_TIMEOUT
    while (remaining := deadline - time.monotonic()) > 0:
        message = _receive(rx, remaining)
        if message and message.startswith("signal "):
            return int(message.split()[1])
    raise BenchError(f"child got no {RENEW_SIGNAL} within {EVENT_TIMEOUT:g} s of a rotation; "
                     f"helper log: {helper.log_tail()}")


def _stop_child(pid: int) -> None:
    """The helper stops its child; make sure a leftover one does not outlive the bench."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        if SCRIPT.name.encode() in cmdline.read():
            os.kill(pid, signal.SIGTERM)


def run(ws: Workspace, plan: Plan) -> list[Row]:
    certs = ws.new_dir("child")
    sock = ws.dir / "child.sock"
    target = f"p99 ≤ {P99_TARGET_MS:g} ms"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(str(sock))
        helper = ws.start_helper(child_config(ws, certs, sock), "child.log")
        child: int | str = "not started"
        try:
            child = wait_for_child(rx, helper, plan.child_start_timeout)
            if isinstance(child, str):
                return [Row(f"{FIGURE}, p99", NEEDS_SUPERVISOR, target, NA, {"reason": child})]
            samples: list[float] = []
            for i in range(plan.warmup_rotations + plan.rotations):
                time.sleep(GAP_S)  # as for rotation latency: pushes never queue up
                _drain(rx)
                ws.agent.rotate()
                pushed = ws.last_push_ns()
                received = signal_time_ns(rx, helper)
                if i >= plan.warmup_rotations:
                    samples.append((received - pushed) / 1e9)
        finally:
            helper.stop()
            if isinstance(child, int):
                _stop_child(child)
    return latency_rows(FIGURE, samples, None, P99_TARGET_MS)
