"""Differential: the Go spiffe-helper and ours, same SPIRE agent, same helper.conf.

A corpus of helper.conf files (tests/interop/corpus/: the Go repository's samples typed
from its docs, and ones exercising hint, intermediates, federation, JWT, omit_expired,
modes; invalid/ holds configs one or both helpers should refuse). SPIRE here has a disk
UpstreamAuthority, so its CA is an intermediate and every chain carries it, and a
federated trust domain b.test; two entries carry the hints "internal" and "external".

- valid/: both run one-shot into separate directories; the files are compared (set of
  files, PEM block types in order, SPIFFE IDs, CA certificates, JWT key material, modes);
- a few of them in daemon mode: the health endpoints' codes and JSON, key by key;
- invalid/: both refuse or both accept.

Every difference is printed as a table (`pytest -rP` or -s shows it) and must be one the
README's migration table lists, and docs/migration.md in full (DOCUMENTED below names
the row).
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from differential import describe_dir, differences, table
from spire import Spire, require_peers, spire, spire_server
from util import ROOT, free_port, helper_cmd, wait_for

# SPIRE starts within the first test of a module: a longer timeout than the default.
pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

CORPUS = Path(__file__).parent / "corpus"
VALID = sorted((CORPUS / "valid").glob("*.conf"))
INVALID = sorted((CORPUS / "invalid").glob("*.conf"))
DAEMON = ["01-go-sample.conf", "07-readme-full.conf", "14-jwt-only.conf",
          "16-jwt-bundle-only.conf"]
WAIT = 15.0  # s a one-shot run may take before it counts as "still waiting"

# (config, what differs) -> words of the README migration-table row that documents it.
EXTRA_AUDIENCES = "drops `jwt_extra_audiences`"
DOCUMENTED: dict[tuple[str, str], str] = {
    ("07-readme-full.conf", "jwt_svid.token jwt"): EXTRA_AUDIENCES,
    ("15-jwt-two-audiences-hint.conf", "cache.token jwt"): EXTRA_AUDIENCES,
    ("20-everything.conf", "db.token jwt"): EXTRA_AUDIENCES,
    ("14-unknown-signal.conf", "outcome"): '`renew_signal = "SIGBOGUS"`',
    ("15-unknown-health-key.conf", "outcome"): "unknown keys inside `health_checks`",
    ("18-hcl-block-list.conf", "outcome"): "repeated `jwt_svids { ... }` blocks",
}


@dataclass
class Peers:
    spire: Spire
    gohelper: Path


@pytest.fixture(scope="module")
def peers() -> Iterator[Peers]:
    gohelper = require_peers("spiffe-helper")["spiffe-helper"]
    with spire("a.test", upstream=True, prefix="sd-") as a, \
            spire_server("b.test", prefix="sb-") as b:
        a.server.set_federated_bundle("b.test", b.bundle_spiffe())
        a.entry("/front", hint="external", x509_ttl=120, jwt_ttl=120)
        a.entry("/back", hint="internal", x509_ttl=120, jwt_ttl=120,
                federates_with=["spiffe://b.test"])
        a.agent.wait_serving(["spiffe://a.test/front", "spiffe://a.test/back"])
        yield Peers(a, gohelper)


def _render(src: Path, agent: Path, cert_dir: Path, extra: str = "") -> Path:
    cert_dir.mkdir(parents=True)
    conf = cert_dir.parent / f"{cert_dir.name}.conf"
    conf.write_text(src.read_text().replace("@AGENT@", str(agent))
                    .replace("@DIR@", str(cert_dir)) + extra)
    return conf


def _one_shot(argv: list[str], cwd: Path) -> str:
    """'exit N', or 'waiting' if it has not finished within WAIT seconds."""
    try:
        result = subprocess.run([*argv, "-daemon-mode=false"], capture_output=True,
                                timeout=WAIT, cwd=cwd, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "waiting"
    return f"exit {result.returncode}"


def _both(peers: Peers, src: Path, tmp: Path, extra: str = "") -> tuple[Path, Path, str, str]:
    go_dir, py_dir = tmp / "go", tmp / "py"
    go_conf = _render(src, peers.spire.socket, go_dir, extra)
    py_conf = _render(src, peers.spire.socket, py_dir, extra)
    go = _one_shot([str(peers.gohelper), "-config", str(go_conf)], tmp)
    ours = _one_shot(helper_cmd("-config", str(py_conf)), tmp)
    return go_dir, py_dir, go, ours


def _readme_migration_table() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Migrating from the Go spiffe-helper")
    return text[start:text.index("\n## ", start + 10)]


def _full_migration_table() -> str:
    """docs/migration.md: the same rows as the README's, with the details."""
    return (ROOT / "docs" / "migration.md").read_text()




@pytest.mark.timeout(300)
def test_valid_corpus_one_shot_same_files(peers, tmp_path):
    assert len(VALID) + len(INVALID) >= 20
    rows = []
    for src in VALID:
        go_dir, py_dir, go, ours = _both(peers, src, tmp_path / src.stem)
        if go != ours:
            rows.append((src.name, "outcome", go, ours))
        for what, a, b in differences(describe_dir(go_dir), describe_dir(py_dir)):
            rows.append((src.name, what, a, b))
        if go != "exit 0":
            rows.append((src.name, "Go refuses a config of valid/", go, ours))
    _report("one-shot files", rows)


@pytest.mark.timeout(180)
def test_daemon_health_json_key_by_key(peers, tmp_path):
    rows = []
    for name in DAEMON:
        src = CORPUS / "valid" / name
        work = tmp_path / src.stem
        ports = {"go": free_port(), "py": free_port()}
        procs = {}
        for who, port in ports.items():
            conf = _render(src, peers.spire.socket, work / who,
                           f"\nhealth_checks {{\n  listener_enabled = true\n"
                           f"  bind_port = {port}\n}}\n")
            argv = ([str(peers.gohelper), "-config", str(conf)] if who == "go"
                    else helper_cmd("-config", str(conf)))
            procs[who] = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            for who, port in ports.items():
                wait_for(lambda port=port: _get(port, "/ready")[0] == 200, 30,
                         what=f"{who} helper ready ({name})")
            for path in ("/live", "/ready"):
                go, ours = _get(ports["go"], path), _get(ports["py"], path)
                if go[0] != ours[0]:
                    rows.append((name, f"{path} status", str(go[0]), str(ours[0])))
                flat_go = _flat(go[1], dirs=(str(work / "go"), "<cert_dir>"))
                flat_py = _flat(ours[1], dirs=(str(work / "py"), "<cert_dir>"))
                for key in sorted(set(flat_go) | set(flat_py)):
                    a, b = flat_go.get(key), flat_py.get(key)
                    if a != b:
                        rows.append((name, f"{path} {key}", json.dumps(a), json.dumps(b)))
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(15)
    _report("daemon health", rows)


@pytest.mark.timeout(600)
def test_invalid_corpus_both_refuse_or_both_accept(peers, tmp_path):
    rows = []
    for src in INVALID:
        _, _, go, ours = _both(peers, src, tmp_path / src.stem)
        if (go == "exit 0") != (ours == "exit 0"):
            rows.append((src.name, "outcome", go, ours))
    _report("invalid configs", rows)


def _get(port: int, path: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, body.decode(errors="replace")
    except OSError:
        return 0, None


def _flat(doc: object, prefix: str = "", dirs: tuple[str, str] = ("", "")
          ) -> dict[str, object]:
    """Key paths to leaf values; the helper's own cert_dir in a key (JWT file names) is
    replaced by a placeholder, as the two helpers write into different directories."""
    if isinstance(doc, dict) and doc:
        out: dict[str, object] = {}
        for key, value in doc.items():
            if dirs[0]:
                key = key.replace(dirs[0], dirs[1])
            out.update(_flat(value, f"{prefix}.{key}" if prefix else key, dirs))
        return out
    return {prefix or ".": doc}


def _report(title: str, rows: list[tuple[str, str, str, str]]) -> None:
    print(f"\n{title}: {len(rows)} difference(s)")
    if rows:
        print(table(rows))
    migration = _readme_migration_table()
    full = _full_migration_table()
    undocumented = []
    for row in rows:
        words = DOCUMENTED.get((row[0], row[1]))
        if words is None or words not in migration or words not in full:
            undocumented.append(row)
    assert not undocumented, "differences not in the README migration table:\n" + \
        table(undocumented)
