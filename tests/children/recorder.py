"""A test double for a supervised daemon: records what happens to it as JSON lines.

    recorder.py --record FILE [--cert PATH] [--exit N] [--ignore SIG] [--exit-on SIG=N]
                [--daemonize N] [--pid-file PATH] [--env NAME ...]

At start it appends {"event": "start", ...} with its pid, whether --cert exists and the
SHA-256 of its bytes, its stdin, the --env variables, NOTIFY_SOCKET and its signal state.
With --exit N it exits N at once. Otherwise it blocks the signals it records, appends
{"event": "ready"}, and waits for them with sigwait: each is recorded; SIGTERM and
SIGINT then kill it with that signal (default dispositions), unless --ignore names it or
--exit-on maps it to an exit code. --daemonize N double-forks N grandchildren that each
record {"event": "grandchild", "pid": ...} and wait in signal.pause() (SIGTERM kills
them). It blocks on signals only: no sleeping.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time

RECORDED = [signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
            signal.SIGWINCH, signal.SIGTERM, signal.SIGALRM]


def record(path: str, **event: object) -> None:
    event.setdefault("pid", os.getpid())
    event["time"] = time.time()
    event["mono"] = time.monotonic()
    with open(path, "a") as f:
        f.write(json.dumps(event) + "\n")


def proc_status() -> dict[str, str]:
    with open("/proc/self/status") as f:
        pairs = (line.split(":", 1) for line in f if ":" in line)
        return {k: v.strip() for k, v in pairs if k in ("SigBlk", "SigIgn", "NSpid")}


def daemonize(path: str) -> None:
    """Double fork: the grandchild is orphaned at once and re-parented to the (sub)reaper."""
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)  # the intermediate exits at once
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    record(path, event="grandchild", status=proc_status())
    while True:
        signal.pause()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--exit", type=int)
    parser.add_argument("--ignore", action="append", default=[])
    parser.add_argument("--exit-on", action="append", default=[])
    parser.add_argument("--daemonize", type=int, default=0)
    parser.add_argument("--pid-file")
    parser.add_argument("--env", action="append", default=[])
    args = parser.parse_args()

    cert: dict[str, object] = {}
    if args.cert:
        try:
            with open(args.cert, "rb") as f:
                cert = {"cert_exists": True, "cert_sha256": hashlib.sha256(f.read()).hexdigest()}
        except FileNotFoundError:
            cert = {"cert_exists": False}
    record(args.record, event="start", argv=sys.argv[1:], stdin=os.readlink("/proc/self/fd/0"),
           env={name: os.environ.get(name) for name in [*args.env, "NOTIFY_SOCKET"]},
           status=proc_status(), pgid=os.getpgid(0), ppid=os.getppid(), **cert)
    if args.exit is not None:
        return args.exit

    ignored = {signal.Signals[f"SIG{name}"] for name in args.ignore}
    exit_on = {signal.Signals[f"SIG{k}"]: int(v) for k, v in (e.split("=") for e in args.exit_on)}
    signal.pthread_sigmask(signal.SIG_BLOCK, RECORDED)
    for _ in range(args.daemonize):
        daemonize(args.record)
    if args.pid_file:
        with open(args.pid_file + ".tmp", "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(args.pid_file + ".tmp", args.pid_file)
    record(args.record, event="ready")
    while True:
        sig = signal.sigwait(RECORDED)
        record(args.record, event="signal", name=sig.name)
        if sig in exit_on:
            return exit_on[sig]
        if sig in (signal.SIGTERM, signal.SIGINT) and sig not in ignored:
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
            os.kill(os.getpid(), sig)
            return 1  # not reached: the signal kills it


if __name__ == "__main__":
    sys.exit(main())
