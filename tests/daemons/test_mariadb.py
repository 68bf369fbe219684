"""MariaDB served by rotating SVIDs: the example in examples/mariadb/, run for real.

One server for the module, run as the mysql user with a private data directory on a free
port. The helper writes the key root:mysql 0640 and, after each rotation, runs the example's
`reload_cmd` (`mariadb-admin flush-ssl`). The mariadb client (--ssl-ca,
--ssl-verify-server-cert) and a Python TLS client after the MySQL SSLRequest packet check the
served certificate; a mariadb session opened before three rotations and a CA rotation keeps
working on the same connection.
"""

from __future__ import annotations

import grp
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from harness import (
    ROTATIONS,
    SERVED_WITHIN,
    LineClient,
    Stack,
    example_stack,
    require_binaries,
    require_root,
    served_cert_mysql,
    spiffe_ids,
)
from util import leaf_serial, mode

pytestmark = pytest.mark.daemon

PASSWORD = "app-password"


@dataclass
class MariaDB(Stack):
    mariadb: str = ""  # the client

    def served(self):
        return served_cert_mysql(self.port, self.bundle)

    def client_args(self) -> list[str]:
        """The README's client: TCP to localhost, chain and host name verified."""
        return [self.mariadb, "--no-defaults", "--protocol=tcp", "--host=localhost",
                f"--port={self.port}", "--user=app", f"--password={PASSWORD}",
                f"--ssl-ca={self.bundle}", "--ssl-verify-server-cert", "--connect-timeout=5"]

    def client_run(self, sql: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.client_args(), "--batch", "--skip-column-names",
                               "-e", sql],
                              capture_output=True, text=True, timeout=15, check=False)


@pytest.fixture(scope="module")
def stack() -> Iterator[MariaDB]:
    require_root("mariadbd runs as the mysql user and the helper chgrps its key")
    bins = require_binaries("mariadbd", "mariadb-install-db", "mariadb", "mariadb-admin")
    # What examples/mariadb/README.md does, step by step.
    with example_stack(MariaDB, "mariadb", ("certs", "run"), dns_names=("localhost",)) as stack:
        work, my_cnf = stack.work, stack.files["my.cnf"]
        stack.mariadb = bins["mariadb"]
        subprocess.run(["chown", "mysql:", str(work / "run")], check=True, timeout=10)
        with stack.running(stack.helper_process("helper.toml")):
            subprocess.run([bins["mariadb-install-db"], f"--defaults-file={my_cnf}",
                            "--skip-test-db"], check=True, capture_output=True, timeout=60)
            with stack.serving([bins["mariadbd"], f"--defaults-file={my_cnf}"], "mariadbd"):
                subprocess.run(
                    [bins["mariadb"], "--no-defaults", f"--socket={work / 'run/mysqld.sock'}",
                     "--user=root", "-e",
                     f"CREATE USER app@'127.0.0.1' IDENTIFIED BY '{PASSWORD}' REQUIRE SSL"],
                    check=True, capture_output=True, timeout=20)
                yield stack


def test_the_key_is_readable_by_the_mysql_group_only(stack):
    key = stack.work / "certs" / "svid_key.pem"
    assert mode(key) == 0o640
    assert (key.stat().st_uid, key.stat().st_gid) == (0, grp.getgrnam("mysql").gr_gid)


def test_mariadb_client_verifies_the_svid_on_disk(stack):
    leaf = stack.served()  # chain against the written bundle, host name localhost
    assert leaf.serial_number == leaf_serial(stack.svid) == stack.agent.svids[0].serial
    assert spiffe_ids(leaf) == [stack.agent.spiffe_id]
    ok = stack.client_run("SHOW STATUS LIKE 'Ssl_version'")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split()[1].startswith("TLSv1.")
    # Without TLS the server refuses the user (REQUIRE SSL, require-secure-transport).
    plain = subprocess.run([stack.mariadb, "--no-defaults", "--protocol=tcp",
                            "--host=127.0.0.1", f"--port={stack.port}", "--user=app",
                            f"--password={PASSWORD}", "--skip-ssl", "-e", "SELECT 1"],
                           capture_output=True, text=True, timeout=15, check=False)
    assert plain.returncode != 0, plain.stdout


def test_mariadb_serves_each_rotation_within_5s_and_an_open_session_keeps_working(stack):
    session = LineClient([*stack.client_args(), "--batch", "--skip-column-names",
                          "--unbuffered"])
    try:
        connection = session.query("SELECT CONNECTION_ID()")
        rotations = []
        for rotation in stack.rotations():
            rotations.append(rotation)
            # The session opened before the rotations: same connection, still TLS.
            assert session.query("SELECT CONNECTION_ID()") == connection
            cipher = session.query("SHOW STATUS LIKE 'Ssl_cipher'")
            assert cipher[0].split("\t")[1], cipher
            # A new client connection verifies the new chain and name against the bundle.
            fresh = stack.client_run("SELECT 1")
            assert fresh.returncode == 0, fresh.stderr
    finally:
        session.close()

    assert len({r.serial for r in rotations}) == len(ROTATIONS)
    print("served after (s):", *(f"{r.kind} {r.seconds:.2f}" for r in rotations))  # -rP shows it
    assert all(r.seconds < SERVED_WITHIN for r in rotations), rotations
    assert rotations[-1].served.issuer == stack.agent.ca.root.subject
