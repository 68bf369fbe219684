"""The child process of the "rotation -> child signalled" figure (standalone script).

    python signal_child.py SOCKET [SIGNAL]

The helper starts it as `cmd`. It sends `ready PID` to the benchmark's datagram SOCKET,
then, for every SIGNAL (default SIGHUP) it receives, `signal WALL_NS` with time.time_ns()
taken the moment sigwait() returns. SIGTERM or SIGINT end it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time


def main(argv: list[str]) -> int:
    path = argv[0]
    renew = signal.Signals[argv[1]] if len(argv) > 1 else signal.SIGHUP
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, {renew, *stops})
    out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    out.connect(path)
    out.send(f"ready {os.getpid()}".encode())
    while True:
        got = signal.sigwait({renew, *stops})
        now = time.time_ns()
        if got in stops:
            return 0
        out.send(f"signal {now}".encode())


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
