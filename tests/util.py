"""Shared test helpers: bounded waits, ports, configs, processes and running the real CLI."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
from cryptography import x509

T = TypeVar("T")
P = TypeVar("P", bound="Process")
KEEP_ENV = "SPIFFE_HELPER_KEEP_WORKDIRS"
ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


# The agent at socket and the output directory: format() it.
AGENT_CONF = """\
agent_address = "{socket}"
cert_dir = "{cert_dir}"
"""
# ... and the three X.509 outputs in cert_dir.
BASE_CONF = AGENT_CONF + """\
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
"""


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def helper_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "helper", *args]


def run_helper(*args: str, timeout: float = 30, env: dict[str, str] | None = None,
               cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(helper_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd, check=False)


def reap(proc: subprocess.Popen[Any], timeout: float) -> int:
    """Wait up to `timeout` seconds for `proc` to exit, then kill it; its exit status."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


class Process:
    """A process under test, its output (stdout and stderr) in a log file or discarded;
    on exit stopped with `stop_signal`, killed if it will not stop, and reaped."""

    def __init__(self, argv: Sequence[str | Path], log: Path | None = None, *,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 stdin: Any = subprocess.DEVNULL, new_session: bool = False,
                 append: bool = False, stop_signal: int = signal.SIGTERM,
                 stop_timeout: float = 10.0) -> None:
        self.log_path = log
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self._log: Any = open(log, "ab" if append else "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        # No user=/group= here: with those, subprocess forks this threaded (gRPC) process
        # and runs setuid code in the child, which can crash; use setpriv in argv instead.
        self.proc = subprocess.Popen([str(a) for a in argv], stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=stdin, env=env, cwd=cwd,
                                     start_new_session=new_session)

    def __enter__(self: P) -> P:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float | None = None) -> int:
        """Send the stop signal; the exit status (TimeoutExpired if it does not exit)."""
        self.proc.send_signal(self.stop_signal)
        return self.proc.wait(self.stop_timeout if timeout is None else timeout)

    def close(self) -> int:
        """Stop it if it runs (killed after stop_timeout), reap it, close the log."""
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            reap(self.proc, self.stop_timeout)
        if self._log is not subprocess.DEVNULL:
            self._log.close()
        return self.proc.returncode


class HelperProcess(Process):
    """A `spiffe-helper` daemon under test, stopped (and reaped) on exit."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                 log: Path | None = None) -> None:
        super().__init__(helper_cmd(*args), log, env=env, cwd=cwd)


def wait_ready(check: Callable[[], T], process: Process, what: str,
               timeout: float = 30.0) -> T:
    """wait_for(check); fail at once, with the tail of its log, when `process` has exited."""

    def ready() -> T:
        if not process.alive():
            raise AssertionError(f"{what}: the process exited:\n{process.output()[-4000:]}")
        return check()

    return wait_for(ready, timeout, what=what)


def missing(reason: str, *, require_env: str, needed: str, remedy: str) -> NoReturn:
    """Skip with a loud reason and its remedy, or fail when CI set `require_env`=1."""
    if os.environ.get(require_env) == "1":
        pytest.fail(f"{reason} ({require_env}=1: {needed} required)")
    pytest.skip(f"{reason}: {remedy}")


@contextlib.contextmanager
def workdir(prefix: str, dir: str | None = None) -> Iterator[Path]:
    """A fresh private directory, removed afterwards (kept with
    SPIFFE_HELPER_KEEP_WORKDIRS=1, to read the logs in it)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    try:
        yield path
    finally:
        if os.environ.get(KEEP_ENV) != "1":
            shutil.rmtree(path, ignore_errors=True)


def read_certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def leaf_serial(path: Path) -> int | None:
    """Serial of the first certificate in a PEM file, None while it is absent or unreadable."""
    try:
        return read_certs(path)[0].serial_number
    except (FileNotFoundError, ValueError, IndexError):
        return None


def env_without(*names: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(extra)
    return env


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_conf(tmp_path: Path, agent: object, cert_dir: Path, extra: str = "", *,
               name: str = "helper.conf", base: str = BASE_CONF) -> Path:
    """tmp_path/name holding `base` (the agent and the three X.509 outputs) and `extra`.
    `agent` is the socket's path or address, or a DevAgentThread (its socket path)."""
    socket = getattr(agent, "socket_path", agent)
    return write_config(tmp_path / name, base.format(socket=socket, cert_dir=cert_dir) + extra)


def first_der(blob: bytes) -> bytes:
    """The first DER certificate of a concatenated chain (a SEQUENCE with its length)."""
    length = blob[1]
    if length < 0x80:
        return blob[: 2 + length]
    size = length & 0x7F
    return blob[: 2 + size + int.from_bytes(blob[2 : 2 + size], "big")]


def serial_of(message: Any) -> int:
    """Serial of the default SVID's leaf in an X509SVIDResponse."""
    return x509.load_der_x509_certificate(first_der(message.svids[0].x509_svid)).serial_number


# The metric families the README promises (tests/ops: rendered, and served on /metrics).
REQUIRED_METRICS = (
    "spiffe_helper_x509_svid_expiry_timestamp_seconds",
    "spiffe_helper_x509_rotations_total",
    "spiffe_helper_jwt_svid_expiry_timestamp_seconds",
    "spiffe_helper_workload_api_reconnects_total",
    "spiffe_helper_refused_messages_total",
    "spiffe_helper_write_failures_total",
    "spiffe_helper_child_restarts_total",
    "spiffe_helper_reloads_total",
    "spiffe_helper_last_rotation_timestamp_seconds",
)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
