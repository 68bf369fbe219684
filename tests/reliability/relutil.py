"""Shared pieces of the reliability suite: the dev-agent as a process it can kill, a helper
config, health and metrics over HTTP, children, secrets, and checks of the files on disk
that do not use the helper's code. (Fixtures are in conftest.py.)"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:  # tests/util.py and tests/pki.py
    sys.path.insert(0, str(TESTS))

from pki import is_leaf_key  # noqa: E402

# Re-exported: the reliability tests import their helpers from here.
from supervised import RECORDER, cmd_lines, gone, hcl, records  # noqa: E402, F401
from util import (  # noqa: E402, F401
    HelperProcess,
    helper_cmd,
    reap,
    serial_of,
    wait_for,
    write_conf,
)

from helper._proto import workload_pb2  # noqa: E402
from helper.outputs.writer import TEMP_MARKER  # noqa: E402

FILES = ("svid.pem", "svid_key.pem", "svid_bundle.pem")
CERT, KEY, BUNDLE = FILES

REFUSED = re.compile(r"refused X\.509-SVID message \(rule (\w+)\)")
RETRYING = re.compile(r"retrying in ([0-9.]+) s")


HEALTH = """\
health_checks {{
  listener_enabled = true
  bind_address = "127.0.0.1"
  bind_port = {port}
}}
"""


def health_block(port: int) -> str:
    """Config lines turning on the health/metrics listener on 127.0.0.1:`port`."""
    return HEALTH.format(port=port)


def http_get(port: int, path: str) -> tuple[int, str] | None:
    """(status, body) of GET http://127.0.0.1:port/path; None while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None


def metric_samples(port: int, family: str) -> dict[str, float]:
    """Samples of one metric family from /metrics: label text (or "") -> value."""
    answer = http_get(port, "/metrics")
    assert answer is not None, "nothing listens"
    assert answer[0] == 200, answer
    samples = {}
    for line in answer[1].splitlines():
        if line.startswith(f"spiffe_helper_{family}"):
            name, _, value = line.rpartition(" ")
            labels = name[len(f"spiffe_helper_{family}"):]
            samples[labels] = float(value)
    return samples


def refused_metric(port: int) -> dict[str, int]:
    """spiffe_helper_refused_messages_total by rule."""
    return {re.sub(r'^\{rule="(.*)"\}$', r"\1", k): int(v)
            for k, v in metric_samples(port, "refused_messages_total").items() if v}


def need_root_tools(*tools: str) -> None:
    """Skip, loudly, when root or a tool is missing; in CI (env CI set) fail instead."""
    missing = [t for t in tools if shutil.which(t) is None]
    problem = ""
    if os.geteuid() != 0:
        problem = "needs root (mount namespaces, tmpfs)"
    elif missing:
        problem = f"needs {', '.join(missing)}"
    if not problem:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{problem}: CI must run this test", pytrace=False)
    pytest.skip(f"!!! NOT RUN: {problem} (set up the tool or run as root; CI fails here)")


# --- the files on disk, checked without the helper's code ---------------------------------


def disk_state(cert_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Name -> (bytes, inode) of each output file."""
    return {n: ((cert_dir / n).read_bytes(), os.lstat(cert_dir / n).st_ino) for n in FILES}


def temps(cert_dir: Path) -> list[str]:
    return sorted(p.name for p in cert_dir.iterdir() if TEMP_MARKER in p.name)


def parse_files(cert_dir: Path) -> tuple[list[x509.Certificate], object, list[x509.Certificate]]:
    """Each file on its own is complete and parseable; raises otherwise."""
    chain = x509.load_pem_x509_certificates((cert_dir / CERT).read_bytes())
    key = serialization.load_pem_private_key((cert_dir / KEY).read_bytes(), None)
    bundle = x509.load_pem_x509_certificates((cert_dir / BUNDLE).read_bytes())
    return chain, key, bundle


def consistent_set(cert_dir: Path) -> x509.Certificate:
    """The three files form one identity: key matches leaf, chain verifies to the bundle."""
    chain, key, bundle = parse_files(cert_dir)
    leaf = chain[0]
    assert is_leaf_key(key, leaf), "key does not match leaf"
    for cert, issuer in itertools.pairwise(chain):
        cert.verify_directly_issued_by(issuer)
    last = chain[-1]
    roots = [r for r in bundle if r.subject == last.issuer]
    assert roots, "chain does not lead to the bundle"
    last.verify_directly_issued_by(roots[0])
    return leaf


def consistent_serial(cert_dir: Path) -> int | None:
    try:
        return consistent_set(cert_dir).serial_number
    except (AssertionError, ValueError, FileNotFoundError, TypeError, IndexError):
        return None


def files_equal_message(cert_dir: Path, message: workload_pb2.X509SVIDResponse) -> bool:
    """The files hold exactly the default SVID of `message` (chain, key, own bundle)."""
    svid = message.svids[0]
    try:
        chain, _key, bundle = parse_files(cert_dir)
        key_pem = (cert_dir / KEY).read_bytes()
    except (ValueError, FileNotFoundError, TypeError):
        return False
    der = serialization.Encoding.DER
    key_der = serialization.load_pem_private_key(key_pem, None).private_bytes(
        der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return (b"".join(c.public_bytes(der) for c in chain) == svid.x509_svid
            and key_der == svid.x509_svid_key
            and b"".join(c.public_bytes(der) for c in bundle) == svid.bundle)


def refusals(log: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rule in REFUSED.findall(log):
        counts[rule] = counts.get(rule, 0) + 1
    return counts


# --- secrets --------------------------------------------------------------------------------

JWT_SHAPED = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")


def secret_forms(key_der: bytes) -> list[str]:
    """Ways a private key could leak into text: hex, base64 whole, any PEM body line."""
    b64 = base64.b64encode(key_der).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64) - 63, 64)]
    return [key_der.hex(), b64, *lines, base64.urlsafe_b64encode(key_der).decode()]


def assert_no_secret(text: str, keys: list[bytes]) -> None:
    assert "PRIVATE KEY" not in text
    assert not JWT_SHAPED.search(text), JWT_SHAPED.search(text)
    for key in keys:
        for form in secret_forms(key):
            assert form not in text, "key material in the text"


# --- the dev-agent ---------------------------------------------------------------------------


class AgentProcess:
    """`spiffe-helper dev-agent` as a subprocess, for faults a thread cannot show (SIGKILL)."""

    def __init__(self, socket: Path, *extra: str) -> None:
        self.socket = socket
        self.proc = subprocess.Popen(
            helper_cmd("dev-agent", "--socket", str(socket), *extra),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the readiness line; EOF if it died
        if "serving" not in line:
            self.close()
            raise RuntimeError(f"dev-agent did not start: {line!r}")

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            reap(self.proc, 10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def first_write(cert_dir: Path, timeout: float = 15) -> int:
    return wait_for(lambda: consistent_serial(cert_dir), timeout, "a consistent first write")


@contextlib.contextmanager
def streaming(tmp_path: Path, agent: Any, cert_dir: Path, extra: str = "", *args: str,
              ) -> Iterator[tuple[HelperProcess, dict[str, tuple[bytes, int]], int]]:
    """The helper CLI on `agent` (the base config and `extra`; `args` on its command line)
    once it has written its first SVID and holds its stream open: (the helper, the files'
    disk_state then, the agent's call count then)."""
    conf = write_conf(tmp_path, agent, cert_dir, extra)
    with HelperProcess("-config", str(conf), *args, log=tmp_path / "helper.log") as helper:
        first_write(cert_dir)
        agent.wait_streams(1)
        yield helper, disk_state(cert_dir), agent.calls
