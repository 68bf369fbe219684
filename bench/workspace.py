"""What every figure needs: a temp dir, the dev-agent, configs, helper processes, observers.

Every wait here is bounded; a figure that cannot get what it waits for raises BenchError
with the helper's last log lines, which marks the bench itself as broken.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from helper.devagent import AgentOptions, DevAgentThread

ROOT = Path(__file__).resolve().parent.parent
SVID, KEY, BUNDLE = "svid.pem", "svid_key.pem", "svid_bundle.pem"
FILES = (SVID, KEY, BUNDLE)
START_TIMEOUT = 20.0  # helper start to first files on disk
EVENT_TIMEOUT = 10.0  # one push to its files on disk
STOP_TIMEOUT = 10.0


class BenchError(RuntimeError):
    """The benchmark itself could not run (not a missed target)."""


def subprocess_env(pycache: Path) -> dict[str, str]:
    """The environment of every Python process the bench starts.

    This worktree's code comes first on the path. Bytecode caching is on, in the bench's
    own cache dir: an installed package has compiled modules, and a development
    environment with PYTHONDONTWRITEBYTECODE would otherwise make every start of the
    helper (but not of site-packages code) recompile it.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("SPIFFE_ENDPOINT_SOCKET", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def hcl_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class HelperDaemon:
    """`python -m helper -config FILE` in daemon mode, logging to a file; stopped on exit."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "helper", "-config", str(config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(STOP_TIMEOUT)
        return self.proc.returncode

    def __enter__(self) -> HelperDaemon:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class Observer:
    """bench/observe.py in its own process: the wall-clock time files land in a directory."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.observe", str(directory)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        self._buffer = b""
        self.renames: Counter[str] = Counter()  # every rename seen, by file name
        line = self._line(START_TIMEOUT)
        if line != "ready":
            self.close()
            raise BenchError(f"observer did not start (got {line!r})")

    def _line(self, timeout: float) -> str | None:
        """The next line within `timeout` seconds, or None."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self._fd], [], [], remaining)
            if ready:
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    raise BenchError("observer exited")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        text = line.decode()
        if text != "ready":
            self.renames[text.partition(" ")[0]] += 1
        return text

    def drain(self) -> None:
        """Skip the events already reported (they still count in `renames`)."""
        while self._line(0) is not None:
            pass

    def wait_for(self, names: Iterable[str], timeout: float, what: str,
                 helper: HelperDaemon | None = None) -> dict[str, int]:
        """Wall-clock ns at which each of `names` was renamed into place (the latest)."""
        wanted = set(names)
        seen: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        while not wanted <= seen.keys():
            line = self._line(max(0.0, deadline - time.monotonic()))
            if line is None:
                missing = ", ".join(sorted(wanted - seen.keys()))
                tail = f"; helper log: {helper.log_tail()}" if helper else ""
                raise BenchError(f"{what}: {missing} not written within {timeout:g} s{tail}")
            name, _, stamp = line.partition(" ")
            if name in wanted:
                seen[name] = int(stamp)
        return seen

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(STOP_TIMEOUT)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Observer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Workspace:
    """A temp dir with the dev-agent listening in it; removed on exit."""

    def __init__(self, *, keep: bool = False, parent: Path | None = None) -> None:
        self.keep = keep
        self.dir = Path(tempfile.mkdtemp(prefix="shbench-", dir=parent))
        self.env = subprocess_env(self.dir / "pycache")
        # JWT-SVIDs live 1 h: an idle daemon's refresh (at half the TTL) is outside the window
        self.agent = DevAgentThread(AgentOptions(str(self.dir / "agent.sock"), jwt_ttl=3600.0))

    def __enter__(self) -> Workspace:
        self.agent.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.agent.close()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def warm_up(self) -> None:
        """One untimed one-shot run: fills the bytecode cache, so that no measured helper
        compiles modules (which costs time and leaves ~7 MiB more RSS behind)."""
        out = self.new_dir("warm-up")
        config = self.write_config("warm-up.conf", out)
        done = subprocess.run(
            [sys.executable, "-m", "helper", "-config", str(config), "-daemon-mode=false"],
            env=self.env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
            check=False)
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise BenchError(f"the helper cannot run: exit {done.returncode}: {' | '.join(tail)}")

    def new_dir(self, name: str) -> Path:
        path = self.dir / name
        path.mkdir()
        return path

    def write_config(self, name: str, cert_dir: Path, extra: str = "") -> Path:
        path = self.dir / name
        path.write_text(
            f"agent_address = {hcl_string(self.agent.socket_path)}\n"
            f"cert_dir = {hcl_string(str(cert_dir))}\n"
            f'svid_file_name = "{SVID}"\n'
            f'svid_key_file_name = "{KEY}"\n'
            f'svid_bundle_file_name = "{BUNDLE}"\n' + extra)
        return path

    def start_helper(self, config: Path, log_name: str) -> HelperDaemon:
        return HelperDaemon(config, self.env, self.dir / log_name)

    def last_push_ns(self) -> int:
        """Wall-clock ns of the agent's last publish (its own timestamp)."""
        return self.agent.push_times[-1].wall_ns


def started(ws: Workspace, config: Path, log_name: str,
            cert_dir: Path) -> tuple[HelperDaemon, Observer]:
    """An observer on `cert_dir`, then a helper daemon, once its first files are on disk."""
    observer = Observer(cert_dir, ws.env)
    helper = ws.start_helper(config, log_name)
    try:
        observer.wait_for(FILES, START_TIMEOUT, "helper start", helper)
    except BaseException:
        helper.stop()
        observer.close()
        raise
    return helper, observer
