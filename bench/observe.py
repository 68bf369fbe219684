"""`python -m bench.observe DIR`: print `NAME WALL_NS` for every file renamed into DIR.

Prints `ready` once the watch is in place. WALL_NS is time.time_ns() taken as soon as the
kernel hands over the event (the same clock as the dev-agent's push timestamps), so it is
at most the wake-up latency after the rename itself. Runs until stdin closes or SIGTERM.
"""

from __future__ import annotations

import sys
import threading
import time

from bench.inotify import IN_MOVED_TO, Inotify


def _exit_when_stdin_closes() -> None:
    sys.stdin.buffer.read()
    import os

    os._exit(0)


def main(argv: list[str]) -> int:
    directory = argv[0]
    out = sys.stdout
    with Inotify(directory, IN_MOVED_TO) as watch:
        threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
        out.write("ready\n")
        out.flush()
        while True:
            events = watch.read()
            now = time.time_ns()
            out.write("".join(f"{name} {now}\n" for mask, name in events if mask & IN_MOVED_TO))
            out.flush()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
