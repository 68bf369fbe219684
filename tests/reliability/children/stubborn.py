"""A test double for a daemon that will not stop: it ignores SIGTERM, and so does the
grandchild it leaves behind by double-forking into a session of its own.

    stubborn.py RECORD_FILE

Appends {"event": "grandchild", "pid": ...} and then {"event": "ready", "pid": ...} to
RECORD_FILE as JSON lines, then both wait in signal.pause() until SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def record(path: str, event: str) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({"event": event, "pid": os.getpid()}) + "\n")


def main() -> None:
    path = sys.argv[1]
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited across fork
    intermediate = os.fork()
    if intermediate == 0:
        os.setsid()
        if os.fork():
            os._exit(0)
        record(path, "grandchild")
        while True:
            signal.pause()
    os.waitpid(intermediate, 0)
    record(path, "ready")
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
