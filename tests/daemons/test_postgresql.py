"""PostgreSQL served by rotating SVIDs, with mTLS: the example in examples/postgresql/.

One server for the module, run as the postgres user in a private cluster on a free port.
The helper writes the files owned by postgres and, after each rotation, runs the example's
`reload_cmd` (`SELECT pg_reload_conf()`). psql (libpq, sslmode=verify-ca) and a Python TLS
client after PostgreSQL's SSLRequest preamble check the served certificate; a psql session
opened before three rotations and a CA rotation keeps working on the same backend.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from harness import (
    ROTATIONS,
    SERVED_WITHIN,
    LineClient,
    Stack,
    example_stack,
    postgres_cluster,
    require_binaries,
    require_root,
    served_cert_postgres,
    spiffe_ids,
)
from util import leaf_serial, mode, run_helper

from helper.devagent import DevCA, MintedSVID

pytestmark = pytest.mark.daemon

PASSWORD = "app-password"


@dataclass
class PostgreSQL(Stack):
    psql: str = ""

    def served(self):
        return served_cert_postgres(self.port, self.bundle)

    def conninfo(self, cert: Path | None = None, key: Path | None = None) -> str:
        info = (f"host=127.0.0.1 port={self.port} dbname=postgres user=app "
                f"sslmode=verify-ca sslrootcert={self.bundle} connect_timeout=5")
        if cert is not None:
            info += f" sslcert={cert} sslkey={key}"
        return info

    def psql_run(self, conninfo: str, sql: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.psql, conninfo, "-X", "-A", "-t", "-q", "-c", sql],
                              capture_output=True, text=True, timeout=15, check=False,
                              env={**os.environ, "PGPASSWORD": PASSWORD})


@pytest.fixture(scope="module")
def stack() -> Iterator[PostgreSQL]:
    require_root("the server runs as the postgres user and the helper chowns its files")
    bins = require_binaries("initdb", "postgres", "psql", "setpriv")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("the postgresql package is installed but there is no postgres user")
    # What examples/postgresql/README.md does, step by step.
    with example_stack(PostgreSQL, "postgresql", ("certs", "client", "run", "data")) as stack:
        work = stack.work
        stack.psql = bins["psql"]
        as_postgres = postgres_cluster(stack, bins, owned=("run", "data"))
        with stack.running(stack.helper_process("helper.toml")), \
                stack.serving([*as_postgres, bins["postgres"], "-D", str(work / "data")],
                              "postgres", stop_signal=signal.SIGINT):
            subprocess.run(
                [*as_postgres, bins["psql"], "-h",
                 str(work / "run"), "-p", str(stack.port), "-X", "-q", "-c",
                 f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'"],
                check=True, capture_output=True, timeout=20)
            # The client's SVID, written by the example's one-shot client helper.
            result = run_helper("-config", str(stack.files["client-helper.hcl"]))
            assert result.returncode == 0, result.stderr
            yield stack


def write_client_svid(directory: Path, svid: MintedSVID) -> tuple[Path, Path]:
    """A client certificate chain and key as psql reads them (key 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert = directory / "client.pem"
    key = directory / "client_key.pem"
    cert.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in svid.chain))
    der = serialization.load_der_private_key(svid.key, None)
    key.touch(mode=0o600)
    key.write_bytes(der.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return cert, key


def test_the_key_is_handed_to_postgres_as_it_requires(stack):
    key = stack.certs / "svid_key.pem"
    assert mode(key) == 0o600
    assert key.stat().st_uid == pwd.getpwnam("postgres").pw_uid


def test_psql_verify_ca_gets_the_svid_on_disk_and_mtls_is_enforced(stack, tmp_path):
    leaf = stack.served()  # chain verified against the written bundle
    assert leaf.serial_number == leaf_serial(stack.svid) == stack.agent.svids[0].serial
    assert spiffe_ids(leaf) == [stack.agent.spiffe_id]

    # The SVID the example's client helper fetched is accepted (clientcert=verify-ca)...
    client = stack.work / "client"
    ok = stack.psql_run(stack.conninfo(client / "svid.pem", client / "svid_key.pem"),
                        "SELECT ssl, client_serial FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"t|{leaf_serial(client / 'svid.pem')}"

    # ... and so is another workload's SVID minted by the same trust domain's CA.
    other = stack.agent.ca.mint_svid("spiffe://example.org/reporting", 600)
    cert, key = write_client_svid(tmp_path / "minted", other)
    ok = stack.psql_run(stack.conninfo(cert, key),
                        "SELECT client_serial FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(other.serial)

    # No client certificate, or one from another trust domain: refused.
    refused = stack.psql_run(stack.conninfo(), "SELECT 1")
    assert refused.returncode != 0
    assert "requires a valid client certificate" in refused.stderr
    foreign = DevCA("other.example").mint_svid("spiffe://other.example/intruder", 600)
    cert, key = write_client_svid(tmp_path / "foreign", foreign)
    refused = stack.psql_run(stack.conninfo(cert, key), "SELECT 1")
    assert refused.returncode != 0, refused.stdout


def test_postgres_serves_each_rotation_within_5s_and_an_open_session_keeps_working(stack,
                                                                                  tmp_path):
    client = stack.work / "client"
    session = LineClient([stack.psql, stack.conninfo(client / "svid.pem",
                                                     client / "svid_key.pem"),
                          "-X", "-A", "-t", "-q"],
                         env={**os.environ, "PGPASSWORD": PASSWORD})
    try:
        backend = session.query("SELECT pg_backend_pid()")
        rotations = []
        for rotation in stack.rotations():
            rotations.append(rotation)
            # The session opened before the rotations: same backend, still TLS.
            assert session.query("SELECT pg_backend_pid()") == backend
            assert session.query(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == ["t"]
            # A new libpq connection verifies the new chain against the bundle on disk.
            fresh = stack.psql_run(
                stack.conninfo(client / "svid.pem", client / "svid_key.pem"), "SELECT 1")
            assert fresh.returncode == 0, fresh.stderr
    finally:
        session.close()

    assert len({r.serial for r in rotations}) == len(ROTATIONS)
    print("served after (s):", *(f"{r.kind} {r.seconds:.2f}" for r in rotations))  # -rP shows it
    assert all(r.seconds < SERVED_WITHIN for r in rotations), rotations
    assert rotations[-1].served.issuer == stack.agent.ca.root.subject
    # The reload re-read ssl_ca_file too: a client SVID from the NEW CA is accepted.
    new_ca_client = stack.agent.ca.mint_svid("spiffe://example.org/after-ca-rotation", 600)
    cert, key = write_client_svid(tmp_path / "new-ca", new_ca_client)
    ok = stack.psql_run(stack.conninfo(cert, key), "SELECT 1")
    assert ok.returncode == 0, ok.stderr
    # The server reloaded once per rotation, and never refused its key.
    log = stack.server.output()
    assert log.count("received SIGHUP, reloading configuration files") >= len(ROTATIONS)
    assert "private key file" not in log, log
    assert mode(stack.certs / "svid_key.pem") == 0o600
