"""Harness of the real-daemon end-to-end tests (nginx, PostgreSQL, MariaDB).

Each test module starts its daemon ONCE (module-scoped fixtures) on a free port, in a private
work directory, from the example under ``examples/<daemon>/`` rendered into that directory,
with the real helper CLI fetching from the embedded dev-agent. Every wait is a bounded poll.

A missing daemon binary skips the module with a loud reason, unless
``SPIFFE_HELPER_REQUIRE_DAEMONS=1`` (set by ``.ci/run``) turns that into a failure.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

import util
from cryptography import x509
from util import (
    ROOT,
    HelperProcess,
    Process,
    free_port,
    leaf_serial,
    reap,
    wait_for,
    wait_ready,
    workdir,
)

from helper.devagent import AgentOptions, DevAgentThread

REQUIRE_ENV = "SPIFFE_HELPER_REQUIRE_DAEMONS"
APT_PACKAGES = "nginx-light postgresql mariadb-server mariadb-client"
EXAMPLES = ROOT / "examples"
# A rotation must be served (new connections get the new leaf) within this many seconds
# of the agent pushing it. The README's guarantees quote this number.
SERVED_WITHIN = 5.0
# Three SVID rotations, then a CA rotation.
ROTATIONS = ("svid", "svid", "svid", "ca")
PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
P = TypeVar("P", bound=Process)


# --- what the machine must have -------------------------------------------------------------


def missing(reason: str) -> NoReturn:
    """Skip with a loud reason, or fail when CI asked for the daemons."""
    util.missing(reason, require_env=REQUIRE_ENV, needed="the real daemons are",
                 remedy=f"install with `apt-get install -y {APT_PACKAGES}` (.ci/run does, and "
                        f"sets {REQUIRE_ENV}=1 so that this is a failure there)")


def require_binaries(*names: str) -> dict[str, str]:
    """Absolute paths of the named programs (PATH, then PostgreSQL's versioned bin dir)."""
    found: dict[str, str] = {}
    for name in names:
        path = shutil.which(name) or _postgres_bin(name)
        if path is None:
            missing(f"{name} is not installed")
        found[name] = path
    return found


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        missing(f"must run as root: {why}")


def _postgres_bin(name: str) -> str | None:
    """Debian keeps initdb and postgres in /usr/lib/postgresql/<version>/bin."""
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    candidates.sort(key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return candidates[-1] if candidates else None


# --- examples rendered into a work directory ------------------------------------------------


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def render(text: str, values: Mapping[str, str]) -> str:
    """Replace every ``@NAME@`` with values[NAME]; an unknown placeholder is an error."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"no value for placeholder @{name}@")
        return values[name]

    return PLACEHOLDER.sub(value, text)


def example_files(name: str) -> list[Path]:
    """The files of examples/<name> a user copies (everything but the README)."""
    return sorted(p for p in (EXAMPLES / name).iterdir()
                  if p.is_file() and p.name != "README.md")


def render_example(name: str, dest: Path, values: Mapping[str, str],
                   files: tuple[str, ...] = ()) -> dict[str, Path]:
    """Render the files of examples/<name> (all but the README, or the named `files`) into
    `dest`, as the example's `sed` line does; returns file name -> rendered path."""
    rendered = {}
    sources = [EXAMPLES / name / f for f in files] if files else example_files(name)
    for src in sources:
        out = dest / src.name
        out.write_text(render(src.read_text(), values))
        rendered[src.name] = out
    return rendered


@contextlib.contextmanager
def daemon_workdir(name: str) -> Iterator[Path]:
    """A private work directory that a server running as postgres, mysql or nobody can enter.

    pytest's base temp directory is mode 0700 and owned by root, so such a server could not
    reach anything under tmp_path; this one is a fresh 0755 directory in the system temp
    directory, removed afterwards (kept with SPIFFE_HELPER_KEEP_WORKDIRS=1, to read the
    daemons' and the helper's logs in it).
    """
    with workdir(f"spiffe-helper-{name}-") as path:
        path.chmod(0o755)
        yield path


# --- a daemon, the helper and the dev-agent in a work directory ----------------------------


@dataclass
class Stack:
    """A daemon serving, on 127.0.0.1:port, the SVID that the helper writes into work/certs
    from the dev-agent; `files` are the example's files rendered into work."""

    agent: DevAgentThread
    work: Path
    port: int
    files: dict[str, Path]
    helper: Process | None = None
    server: Daemon | None = None  # when the helper does not start it as its cmd

    @property
    def certs(self) -> Path:
        return self.work / "certs"

    @property
    def svid(self) -> Path:
        return self.certs / "svid.pem"

    @property
    def bundle(self) -> Path:
        return self.certs / "svid_bundle.pem"

    def served(self) -> x509.Certificate:
        """The leaf the daemon presents to a new connection (verified against the bundle)."""
        raise NotImplementedError

    def rotations(self) -> Iterator[Rotation]:
        """Each of ROTATIONS in turn, yielded once the daemon serves it (the caller checks
        what it must between them)."""
        for kind in ROTATIONS:
            yield rotate_and_wait_served(self.agent, self.svid, kind, self.served)

    def helper_process(self, config: str) -> HelperProcess:
        """The helper run with the example's config file `config`, its log in work."""
        return HelperProcess("-config", str(self.files[config]), log=self.work / "helper.log")

    @contextlib.contextmanager
    def running(self, helper: P, serving: str = "") -> Iterator[P]:
        """`helper` until it has written the first SVID or, with `serving`, until that daemon
        (its cmd) listens on the port; stopped on exit."""
        with helper:
            self.helper = helper
            if serving:
                wait_listening(self.port, helper, serving)
            else:
                wait_ready(lambda: leaf_serial(self.svid), helper, "the helper's first write", 10)
            yield helper

    @contextlib.contextmanager
    def serving(self, argv: list[str], name: str, *,
                stop_signal: int = signal.SIGTERM) -> Iterator[Daemon]:
        """The daemon `name` (its log work/<name>.log), listening on the port."""
        with Daemon(argv, self.work / f"{name}.log", stop_signal=stop_signal) as server:
            self.server = server
            wait_listening(self.port, server, name)
            yield server


S = TypeVar("S", bound=Stack)


@contextlib.contextmanager
def example_stack(kind: type[S], example: str, dirs: Sequence[str], *, name: str = "",
                  dns_names: Sequence[str] = (), files: tuple[str, ...] = ()) -> Iterator[S]:
    """What examples/<example>/README.md does first: a private work directory with `dirs`,
    the dev-agent, a free port, and the example's files (or the named `files`) rendered."""
    with daemon_workdir(name or example) as work, \
            DevAgentThread(AgentOptions(work / "agent.sock", dns_names=tuple(dns_names))) as agent:
        port = free_port()
        for sub in dirs:
            (work / sub).mkdir()
        rendered = render_example(example, work, {"WORK": str(work), "PORT": str(port),
                                                  "AGENT": agent.socket_path}, files)
        yield kind(agent, work, port, rendered)


def as_user(setpriv: str, user: str) -> list[str]:
    """The prefix that runs a command as `user`: setpriv switches and execs, so there is no
    fork of this (threaded, gRPC) process with a setuid step, and signals reach the server."""
    return [setpriv, f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]


def postgres_cluster(stack: Stack, bins: Mapping[str, str], owned: Sequence[str]) -> list[str]:
    """A PostgreSQL cluster in work/data (0700) with the example's postgresql-spiffe.conf
    included; the `owned` work subdirectories (data among them) are chowned to postgres.
    Returns the prefix that runs a command as postgres."""
    postgres = pwd.getpwnam("postgres")
    for sub in owned:
        os.chown(stack.work / sub, postgres.pw_uid, postgres.pw_gid)
    (stack.work / "data").chmod(0o700)
    as_postgres = as_user(bins["setpriv"], "postgres")
    subprocess.run([*as_postgres, bins["initdb"], "-D", str(stack.work / "data"), "-U",
                    "postgres", "--auth-local=peer", "--no-instructions", "--no-sync"],
                   check=True, capture_output=True, timeout=60)
    with (stack.work / "data" / "postgresql.conf").open("a") as conf:
        conf.write(f"include '{stack.files['postgresql-spiffe.conf']}'\n")
    return as_postgres


# --- processes ------------------------------------------------------------------------------


class Daemon(Process):
    """A server process under test, its output in a log file; stopped and reaped on exit."""

    def __init__(self, argv: list[str], log: Path, *,
                 stop_signal: int = signal.SIGTERM) -> None:
        super().__init__(argv, log, stop_signal=stop_signal, stop_timeout=20.0)


def wait_listening(port: int, process: Process, what: str, timeout: float = 30.0) -> None:
    """Poll until something accepts TCP connections on 127.0.0.1:port; fail early (with the
    log's tail) when the process that should listen has died."""

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    wait_ready(listening, process, f"{what} listening on port {port}", timeout)


class LineClient:
    """An interactive command-line SQL client (psql, mariadb) kept open on ONE connection.

    `query()` writes SQL followed by ``SELECT '<marker>';`` and reads output lines until the
    marker comes back, within a deadline.
    """

    def __init__(self, argv: list[str], *, env: Mapping[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, bufsize=0)
        self._buffer = b""
        self._queries = 0

    def query(self, sql: str, timeout: float = 10.0) -> list[str]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self._queries += 1
        marker = f"spiffe-helper-marker-{self._queries}"
        self.proc.stdin.write(f"{sql.rstrip().rstrip(';')};\nSELECT '{marker}';\n".encode())
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\n", 1)
                line = raw.decode(errors="replace")
                if line == marker:
                    return lines
                lines.append(line)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no answer to {sql!r} within {timeout} s; got {lines}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"client exited (status {self.proc.wait(5)}) "
                                         f"while answering {sql!r}; output: {lines}")
                self._buffer += chunk

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        reap(self.proc, 10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# --- the certificate a server presents ------------------------------------------------------


def client_context(bundle: Path, *, check_hostname: bool = True,
                   cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A TLS client context that verifies the server chain against the written bundle
    (read afresh each time, so it holds the roots of the latest CA rotation)."""
    context = ssl.create_default_context(cafile=str(bundle))
    context.check_hostname = check_hostname
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


def served_cert_https(port: int, bundle: Path) -> x509.Certificate:
    """The leaf an HTTPS server on 127.0.0.1:port presents, verified for host `localhost`."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            client_context(bundle).wrap_socket(raw, server_hostname="localhost") as tls:
        return _peer_leaf(tls)


def served_cert_postgres(port: int, bundle: Path) -> x509.Certificate:
    """The leaf PostgreSQL presents after the SSLRequest preamble, verified (chain against
    the bundle; no host name, as libpq's sslmode=verify-ca)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(struct.pack("!II", 8, 80877103))  # SSLRequest
        answer = raw.recv(1)
        assert answer == b"S", f"PostgreSQL refused TLS: {answer!r}"
        with client_context(bundle, check_hostname=False).wrap_socket(raw) as tls:
            return _peer_leaf(tls)


# MySQL protocol capability flags of the SSLRequest packet.
_CLIENT_PROTOCOL_41, _CLIENT_SSL, _CLIENT_SECURE_CONNECTION = 0x200, 0x800, 0x8000


def served_cert_mysql(port: int, bundle: Path) -> x509.Certificate:
    """The leaf MariaDB presents after its greeting and the client's SSLRequest packet,
    verified against the bundle for host `localhost`."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        header = _recv_exactly(raw, 4)
        _recv_exactly(raw, int.from_bytes(header[:3], "little"))  # the server greeting
        caps = _CLIENT_PROTOCOL_41 | _CLIENT_SSL | _CLIENT_SECURE_CONNECTION
        payload = struct.pack("<IIB23x", caps, 1 << 24, 33)  # utf8 collation
        raw.sendall(len(payload).to_bytes(3, "little") + b"\x01" + payload)
        with client_context(bundle).wrap_socket(raw, server_hostname="localhost") as tls:
            return _peer_leaf(tls)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("server closed the connection during the greeting")
        data += chunk
    return data


def _peer_leaf(tls: ssl.SSLSocket) -> x509.Certificate:
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def spiffe_ids(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(uri) for uri in san.get_values_for_type(x509.UniformResourceIdentifier)]


# --- rotations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rotation:
    kind: str  # "svid" or "ca"
    serial: int
    seconds: float  # from the agent's push to the daemon serving the new leaf
    served: x509.Certificate


def rotate_and_wait_served(agent: DevAgentThread, svid_file: Path, kind: str,
                           served: Callable[[], x509.Certificate],
                           within: float = SERVED_WITHIN) -> Rotation:
    """Rotate the SVID (or the CA, then the SVID) and poll, within `within` seconds, until
    the file on disk and then the daemon's fresh connections carry the new leaf."""
    start = time.monotonic()
    if kind == "ca":
        agent.rotate_ca()
    else:
        agent.rotate()
    serial = agent.svids[0].serial
    last: list[object] = []

    def on_disk() -> bool:
        return leaf_serial(svid_file) == serial

    def serving() -> x509.Certificate | None:
        try:
            cert = served()
        except (OSError, AssertionError) as exc:  # ssl.SSLError is an OSError
            last[:] = [exc]
            return None
        last[:] = [f"serial {cert.serial_number:x}"]
        return cert if cert.serial_number == serial else None

    wait_for(on_disk, within, what=f"{kind} rotation: serial {serial:x} in {svid_file}")
    remaining = max(within - (time.monotonic() - start), 0.1)
    try:
        cert = wait_for(serving, remaining, what=f"{kind} rotation served")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: new serial {serial:x} not served within {within} s; "
                             f"last seen: {last}") from None
    return Rotation(kind, serial, time.monotonic() - start, cert)
