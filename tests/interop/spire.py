"""Harness of the interop tests: a real SPIRE server and agent, and the Go spiffe-helper.

The binaries come from ``tests/interop/build-peers`` (SPIRE and the Go helper built from the
Go module proxy at pinned versions into a cache directory outside the checkout). Without
them the tests skip with the reason, unless ``SPIFFE_HELPER_REQUIRE_PEERS=1`` (set by
``.ci/run``) turns that into a failure.

Each test module starts its own SPIRE server (sqlite datastore and every socket in a short
private temp directory, memory key manager, join_token node attestation, short ``ca_ttl``)
and an agent joined with a generated token, with the ``unix`` workload attestor. Entries
select ``unix:uid:<our uid>``, so both helpers (children of this process) get them. Every
wait is a bounded poll (the SPIRE ``healthcheck`` commands, ``spire-agent api fetch``).
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import util
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from pki import is_leaf_key, make_root
from util import ROOT, Process, wait_for, wait_ready, workdir

SPIRE_VERSION = "v1.13.3"
GOHELPER_VERSION = "v0.11.0"
REQUIRE_ENV = "SPIFFE_HELPER_REQUIRE_PEERS"
PEERS_ENV = "SPIFFE_HELPER_PEERS"
BUILD = ROOT / "tests" / "interop" / "build-peers"


def peers_bin() -> Path:
    root = Path(os.environ.get(PEERS_ENV, "/var/cache/spiffe-helper-peers"))
    return root / f"spire-{SPIRE_VERSION}-gohelper-{GOHELPER_VERSION}" / "bin"


def missing(reason: str) -> NoReturn:
    util.missing(reason, require_env=REQUIRE_ENV, needed="the interop peers are",
                 remedy=f"run tests/interop/build-peers (needs Go; .ci/run does, and sets "
                        f"{REQUIRE_ENV}=1 so that this is a failure there)")


def require_peers(*names: str) -> dict[str, Path]:
    found = {}
    for name in names:
        path = peers_bin() / name
        if not os.access(path, os.X_OK):
            missing(f"{path} is not built")
        found[name] = path
    return found


def short_workdir(prefix: str) -> contextlib.AbstractContextManager[Path]:
    """A private directory with a SHORT path: Unix socket paths must stay under 108 bytes,
    and pytest's tmp_path is long."""
    return workdir(prefix, dir="/tmp")


def start(command: Path, config: Path, log: Path, socket: Path, what: str,
          *args: str) -> Process:
    """`<command> run -config <config> <args>`, its output appended to `log`, once its
    `healthcheck` on `socket` passes (a bounded poll; failing at once if it exits)."""
    proc = Process([command, "run", "-config", config, *args], log, append=True,
                   stop_timeout=15.0)
    wait_ready(lambda: _run([command, "healthcheck", "-socketPath", socket], check=False,
                            timeout=10).returncode == 0, proc, f"{what} healthy", 30)
    return proc


def _run(argv: Sequence[str | Path], *, check: bool = True,
         timeout: float = 30) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {result.returncode}:\n"
                             f"{result.stdout}{result.stderr}")
    return result


@dataclass
class Entry:
    id: str
    spiffe_id: str


@dataclass
class SpireServer:
    bin: Path
    work: Path
    trust_domain: str
    port: int
    ca_ttl: str = "10m"
    # (certificate, key) of an upstream root: SPIRE's CA is then an intermediate, and
    # every SVID chain carries it.
    upstream: tuple[Path, Path] | None = None
    proc: Process | None = None
    entries: list[Entry] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.work / "s.sock"

    def config(self) -> str:
        data = self.work / "data"
        return f"""
server {{
    bind_address = "127.0.0.1"
    bind_port = "{self.port}"
    socket_path = "{self.socket}"
    trust_domain = "{self.trust_domain}"
    data_dir = "{data}"
    log_level = "DEBUG"
    ca_ttl = "{self.ca_ttl}"
    default_x509_svid_ttl = "1m"
    default_jwt_svid_ttl = "1m"
    ca_key_type = "ec-p256"
    federation {{
        bundle_endpoint {{
            address = "127.0.0.1"
            port = {self.port + 1}
        }}
    }}
}}
plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "sqlite3"
            connection_string = "{data}/datastore.sqlite3"
        }}
    }}
    NodeAttestor "join_token" {{ plugin_data {{}} }}
    KeyManager "memory" {{ plugin_data {{}} }}
{self._upstream()}}}
"""

    def _upstream(self) -> str:
        if self.upstream is None:
            return ""
        cert, key = self.upstream
        return (f'    UpstreamAuthority "disk" {{ plugin_data {{ cert_file_path = "{cert}"\n'
                f'        key_file_path = "{key}" }} }}\n')

    def start(self) -> SpireServer:
        (self.work / "data").mkdir(parents=True, exist_ok=True)
        conf = self.work / "server.conf"
        conf.write_text(self.config())
        self.proc = start(self.bin / "spire-server", conf, self.work / "server.log",
                          self.socket, "spire-server")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.close()

    def cmd(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        sub = list(args)
        # `spire-server <group> <command> ... -socketPath S`
        return _run([self.bin / "spire-server", *sub, "-socketPath", self.socket], check=check)

    def join_token(self) -> str:
        out = self.cmd("token", "generate", "-ttl", "600").stdout
        match = re.search(r"Token:\s*(\S+)", out)
        assert match, out
        return match.group(1)

    def create_entry(self, path: str, parent: str, *, x509_ttl: int = 20, jwt_ttl: int = 30,
                     hint: str = "", federates_with: Sequence[str] = (),
                     selectors: Sequence[str] = (), dns: Sequence[str] = ()) -> Entry:
        spiffe_id = f"spiffe://{self.trust_domain}{path}"
        args: list[str | Path] = ["entry", "create", "-parentID", parent, "-spiffeID",
                                  spiffe_id, "-x509SVIDTTL", str(x509_ttl),
                                  "-jwtSVIDTTL", str(jwt_ttl), "-output", "json"]
        for selector in selectors or (f"unix:uid:{os.getuid()}",):
            args += ["-selector", selector]
        if hint:
            args += ["-hint", hint]
        for name in dns:
            args += ["-dns", name]
        for td in federates_with:
            args += ["-federatesWith", td]
        out = json.loads(self.cmd(*args).stdout)
        entry_id = out["results"][0]["entry"]["id"]
        entry = Entry(entry_id, spiffe_id)
        self.entries.append(entry)
        return entry

    def delete_entry(self, entry: Entry) -> None:
        self.cmd("entry", "delete", "-entryID", entry.id)
        self.entries.remove(entry)

    def bundle_spiffe(self) -> str:
        return self.cmd("bundle", "show", "-format", "spiffe").stdout

    def set_federated_bundle(self, td: str, spiffe_bundle: str) -> None:
        path = self.work / f"{td}.bundle.json"
        path.write_text(spiffe_bundle)
        self.cmd("bundle", "set", "-format", "spiffe", "-id", f"spiffe://{td}", "-path", path)

    def delete_federated_bundle(self, td: str) -> None:
        self.cmd("bundle", "delete", "-id", f"spiffe://{td}", "-mode", "dissociate")


@dataclass
class SpireAgent:
    bin: Path
    work: Path
    server: SpireServer
    token: str = ""
    proc: Process | None = None

    @property
    def socket(self) -> Path:
        return self.work / "a.sock"

    @property
    def spiffe_id(self) -> str:
        return f"spiffe://{self.server.trust_domain}/spire/agent/join_token/{self.token}"

    def config(self) -> str:
        return f"""
agent {{
    data_dir = "{self.work}/agent"
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "{self.server.port}"
    socket_path = "{self.socket}"
    trust_domain = "{self.server.trust_domain}"
    insecure_bootstrap = true
}}
plugins {{
    NodeAttestor "join_token" {{ plugin_data {{}} }}
    # On disk, so that a restarted agent re-uses its SVID (a join token is single-use).
    KeyManager "disk" {{ plugin_data {{ directory = "{self.work}/agent" }} }}
    WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
"""

    def start(self) -> SpireAgent:
        (self.work / "agent").mkdir(parents=True, exist_ok=True)
        conf = self.work / "agent.conf"
        conf.write_text(self.config())
        if not self.token:
            self.token = self.server.join_token()
        self.proc = start(self.bin / "spire-agent", conf, self.work / "agent.log", self.socket,
                          "spire-agent", "-joinToken", self.token)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.close()

    def restart(self) -> None:
        """Stop and start again with the same data dir (the agent re-attests with its
        stored SVID; a join token is single-use)."""
        self.stop()
        self.proc = start(self.bin / "spire-agent", self.work / "agent.conf",
                          self.work / "agent.log", self.socket, "spire-agent after restart")

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        """`spire-agent <args> -socketPath <the Workload API socket>`, unchecked."""
        return _run([self.bin / "spire-agent", *args, "-socketPath", self.socket],
                    check=False)

    def fetch_x509_ids(self) -> list[str]:
        """The SPIFFE IDs the agent serves this process now (empty while it serves none)."""
        result = _run([self.bin / "spire-agent", "api", "fetch", "x509", "-socketPath",
                       self.socket, "-output", "json", "-timeout", "2s"], check=False)
        if result.returncode != 0:
            return []
        data = json.loads(result.stdout)
        return [svid["spiffe_id"] for svid in data.get("svids", [])]

    def wait_serving(self, ids: Sequence[str], timeout: float = 30) -> None:
        """Until the agent serves exactly these SPIFFE IDs (it syncs entries every 5 s)."""
        want = sorted(ids)
        last: list[list[str]] = [[]]

        def serving() -> bool:
            last[0] = sorted(self.fetch_x509_ids())
            return last[0] == want

        try:
            wait_for(serving, timeout, what=f"agent serving {want}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last served {last[0]}") from None


@dataclass
class Spire:
    server: SpireServer
    agent: SpireAgent

    @property
    def socket(self) -> Path:
        return self.agent.socket

    @property
    def td(self) -> str:
        return self.server.trust_domain

    def entry(self, path: str, **kw: object) -> Entry:
        return self.server.create_entry(path, self.agent.spiffe_id, **kw)  # type: ignore[arg-type]


def free_port_pair() -> int:
    """A port p with p and p+1 free on 127.0.0.1 (the server API and its bundle endpoint)."""
    import socket
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise AssertionError("no free port pair")


def upstream_root(work: Path, trust_domain: str) -> tuple[Path, Path]:
    """A self-signed root CA (cert and PKCS#8 key files) for SPIRE's disk UpstreamAuthority."""
    root = make_root(trust_domain, cn=f"{trust_domain} upstream root")
    cert, key = work / "upstream.crt", work / "upstream.key"
    cert.write_bytes(root.cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(root.key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key.chmod(0o600)
    return cert, key


@contextlib.contextmanager
def spire_server(trust_domain: str, *, ca_ttl: str = "10m", prefix: str = "ss-",
                 upstream: bool = False) -> Iterator[SpireServer]:
    """A SPIRE server alone (a federation peer), stopped on exit."""
    bins = require_peers("spire-server")
    with short_workdir(prefix) as work:
        server = SpireServer(bins["spire-server"].parent, work, trust_domain,
                             free_port_pair(), ca_ttl=ca_ttl,
                             upstream=upstream_root(work, trust_domain) if upstream else None)
        try:
            yield server.start()
        finally:
            server.stop()


@contextlib.contextmanager
def spire(trust_domain: str = "a.test", *, ca_ttl: str = "10m", prefix: str = "sp-",
          upstream: bool = False) -> Iterator[Spire]:
    """A SPIRE server and an agent joined to it, stopped on exit."""
    bins = require_peers("spire-agent")
    with spire_server(trust_domain, ca_ttl=ca_ttl, prefix=prefix,
                      upstream=upstream) as server:
        agent = SpireAgent(bins["spire-agent"].parent, server.work, server)
        try:
            agent.start()
            yield Spire(server, agent)
        finally:
            agent.stop()


# --- helper configs and checks on the files -------------------------------------------------


def hcl_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(hcl_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {hcl_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def helper_conf(path: Path, agent: Path, cert_dir: Path, **keys: object) -> Path:
    """An HCL helper.conf (modes are written as octal literals, as Go users write them)."""
    lines = [f'agent_address = "{agent}"', f'cert_dir = "{cert_dir}"']
    for key, value in keys.items():
        if key.endswith("_mode") and isinstance(value, int):
            lines.append(f"{key} = 0{value:o}")
        elif key == "health_checks" and isinstance(value, dict):
            lines.append("health_checks {")
            lines += [f"  {k} = {hcl_value(v)}" for k, v in value.items()]
            lines.append("}")
        else:
            lines.append(f"{key} = {hcl_value(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def out_and_conf(tmp_path: Path, agent: Path, **keys: object) -> tuple[Path, Path]:
    """tmp_path/out (created) and tmp_path/helper.conf, the helper writing into it from the
    Workload API at `agent`."""
    out = tmp_path / "out"
    out.mkdir()
    return out, helper_conf(tmp_path / "helper.conf", agent, out, **keys)


X509_FILES = {"svid_file_name": "svid.pem", "svid_key_file_name": "svid_key.pem",
              "svid_bundle_file_name": "svid_bundle.pem"}


def load_certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def uri_sans(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]


def verify_chain(chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate],
                 at: datetime.datetime | None = None) -> x509.Certificate:
    """Check every signature from the leaf up to one of `roots` and every validity window;
    returns the root that anchors the chain."""
    now = at or datetime.datetime.now(datetime.timezone.utc)
    for cert in chain:
        assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc, cert.subject
    for child, parent in itertools.pairwise(chain):
        child.verify_directly_issued_by(parent)
    top = chain[-1]
    for root in roots:
        if root.subject == top.issuer:
            try:
                top.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature):
                continue
            assert root.not_valid_before_utc <= now <= root.not_valid_after_utc
            return root
    raise AssertionError(f"chain of {uri_sans(chain[0])} does not verify to the bundle")


def key_matches(key_path: Path, leaf: x509.Certificate) -> bool:
    return is_leaf_key(serialization.load_pem_private_key(key_path.read_bytes(), None), leaf)


def check_x509_files(cert_dir: Path, spiffe_id: str, names: dict[str, str] = X509_FILES,
                     settle: float = 5.0) -> tuple[x509.Certificate, x509.Certificate]:
    """The three Go-layout files hold an SVID of `spiffe_id`, its key, and a bundle it
    verifies to; returns (leaf, anchoring root). Read within `settle` seconds: a reader that
    comes between the renames of a new set's files sees the new cert with the old key."""
    last: list[BaseException] = []

    def check() -> tuple[x509.Certificate, x509.Certificate] | None:
        try:
            chain = load_certs(cert_dir / names["svid_file_name"])
            assert uri_sans(chain[0]) == [spiffe_id], uri_sans(chain[0])
            assert key_matches(cert_dir / names["svid_key_file_name"], chain[0]), "key"
            return chain[0], verify_chain(
                chain, load_certs(cert_dir / names["svid_bundle_file_name"]))
        except (AssertionError, ValueError, FileNotFoundError) as exc:
            last[:] = [exc]
            return None

    try:
        return wait_for(check, settle, what=f"{cert_dir}: a consistent SVID of {spiffe_id}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {last[0]!r}") from None
