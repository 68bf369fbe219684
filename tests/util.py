"""Shared test helpers: bounded waits and running the real CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509

T = TypeVar("T")
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


class HelperProcess:
    """A `spiffe-helper` daemon under test, stopped (and reaped) on exit."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                 log: Path | None = None) -> None:
        self.log_path = log
        self._log = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(helper_cmd(*args), stdout=self._log, stderr=self._log,
                                     env=env, cwd=cwd, stdin=subprocess.DEVNULL)

    def __enter__(self) -> HelperProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not subprocess.DEVNULL:
            self._log.close()

    def stop(self, timeout: float = 10) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


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
    path.write_text(text)
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
