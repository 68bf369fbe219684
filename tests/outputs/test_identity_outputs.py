"""Identity outputs end to end: the real CLI (or the real core in this process, where the
test must see its status or phases) against the real dev-agent on a real socket.

JWT-SVIDs and JWT bundles, federation across every bundle output, the new formats, owner
and group, several identities from one stream.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import util
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.serialization import pkcs12
from spiffe_formats import (
    CREDENTIAL_BUNDLE,
    bundle_map_certificates,
    check_credential_folder,
    keytool,
    pkcs12_with_keytool,
    pkcs12_with_openssl,
    strict_pem_blocks,
)
from util import HelperProcess, mode, read_certs, run_helper, wait_for

from helper import app, config
from helper._proto import workload_pb2
from helper.devagent import AgentOptions, DevAgentThread
from helper.devagent.jws import sign_jws
from helper.features import Feature
from helper.identity.snapshot import X509Snapshot
from helper.ops.status import FAILED, WRITTEN
from helper.supervise.supervisor import Supervisor

TD = "example.org"
PARTNER = "partner.test"


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    d = tmp_path / "certs"
    d.mkdir()
    return d


def agent_at(tmp_path: Path, **options: Any) -> DevAgentThread:
    return DevAgentThread(AgentOptions(str(tmp_path / "agent" / "api.sock"), **options))


def write_conf(tmp_path: Path, agent: DevAgentThread, certs: Path, body: str,
               name: str = "helper.conf") -> Path:
    return util.write_conf(tmp_path, agent.address, certs, body, name=name, base=util.AGENT_CONF)


# --- reading JWTs and the JWT bundle file the way a consumer would ----------------------------


def b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = token.split(".")
    return json.loads(b64url(head)), json.loads(b64url(body))


def keys_from_bundle_file(path: Path) -> dict[str, dict[str, ec.EllipticCurvePublicKey]]:
    """Go format: {td: base64(JWKS)}; EC P-256 keys by kid, per trust domain."""
    result: dict[str, dict[str, ec.EllipticCurvePublicKey]] = {}
    for td, encoded in json.loads(path.read_bytes()).items():
        jwks = json.loads(base64.b64decode(encoded, validate=True))
        result[td] = {
            k["kid"]: ec.EllipticCurvePublicNumbers(
                int.from_bytes(b64url(k["x"]), "big"), int.from_bytes(b64url(k["y"]), "big"),
                ec.SECP256R1()).public_key()
            for k in jwks["keys"]
        }
    return result


def verify_es256(token: str, key: ec.EllipticCurvePublicKey) -> None:
    head, body, sig = token.split(".")
    raw = b64url(sig)
    signature = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                           int.from_bytes(raw[32:], "big"))
    key.verify(signature, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))


def token_on_disk(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


# --- JWT-SVIDs ----------------------------------------------------------------------------------

JWT_CONF = """\
jwt_bundle_file_name = "jwt_bundle.json"
jwt_svids = [
  {jwt_audience = "db", jwt_extra_audiences = ["cache"], jwt_svid_file_name = "db.token"},
  {jwt_audience = "web", jwt_svid_file_name = "web.token"},
]
"""


def test_jwt_only_one_shot_writes_tokens_that_verify_with_the_written_bundle(
        tmp_path: Path, certs: Path) -> None:
    with agent_at(tmp_path, jwt_ttl=600) as agent:
        path = write_conf(tmp_path, agent, certs, JWT_CONF)
        result = run_helper("-config", str(path), "-daemon-mode=false")
        assert result.returncode == 0, result.stderr
        assert agent.calls == 0  # a JWT-only config opens no X.509 stream
    assert sorted(p.name for p in certs.iterdir()) == ["db.token", "jwt_bundle.json",
                                                       "web.token"]
    keys = keys_from_bundle_file(certs / "jwt_bundle.json")
    assert list(keys) == [TD]
    for name, audience in (("db.token", ["db", "cache"]), ("web.token", ["web"])):
        token = (certs / name).read_text()
        header, claims = jwt_parts(token)
        assert claims["sub"] == agent.spiffe_id
        assert claims["aud"] == audience
        assert 500 < claims["exp"] - time.time() <= 600
        verify_es256(token, keys[TD][header["kid"]])
        assert mode(certs / name) == 0o600
    assert mode(certs / "jwt_bundle.json") == 0o600
    assert "eyJ" not in result.stderr  # no token in the log


def test_short_lived_jwt_svid_is_refreshed_before_it_expires(tmp_path: Path, certs: Path) -> None:
    with agent_at(tmp_path, jwt_ttl=6) as agent:
        path = write_conf(tmp_path, agent, certs,
                          'jwt_svids = [{jwt_audience = "db", jwt_svid_file_name = "db.token"}]\n')
        with HelperProcess("-config", str(path), log=tmp_path / "helper.log"):
            first = wait_for(lambda: token_on_disk(certs / "db.token"), what="first token")
            first_exp = jwt_parts(first)[1]["exp"]
            # refetched at about half the remaining 5-6 s plus 1 s: 1.5-2 s before expiry
            second = wait_for(lambda: (t := token_on_disk(certs / "db.token")) != first and t,
                              timeout=10, what="refreshed token")
            seen_at = time.time()
            assert seen_at < first_exp, "the token expired before it was refreshed"
            assert jwt_parts(second)[1]["exp"] > first_exp


def test_hostile_jwt_svids_from_the_agent_are_refused_with_the_rule_named(
        tmp_path: Path, certs: Path) -> None:
    with agent_at(tmp_path) as agent:
        def raw(token: str) -> workload_pb2.JWTSVIDResponse:
            response = workload_pb2.JWTSVIDResponse()
            response.svids.add(spiffe_id=agent.spiffe_id, svid=token)
            return response

        now = int(time.time())
        claims = {"sub": agent.spiffe_id, "aud": ["db"], "exp": now + 300}
        unsigned = sign_jws({"alg": "none", "kid": agent.ca.jwt_authority.kid}, claims, None)
        other_audience = agent.ca.mint_jwt_svid(agent.spiffe_id, ["someone-else"], 300)
        agent.queue_jwt_svid_responses(raw(unsigned), raw(other_audience))
        path = write_conf(tmp_path, agent, certs,
                          'jwt_svids = [{jwt_audience = "db", jwt_svid_file_name = "db.token"}]\n')
        with HelperProcess("-config", str(path), log=tmp_path / "helper.log") as helper:
            token = wait_for(lambda: token_on_disk(certs / "db.token"), timeout=15,
                             what="a valid token after the refusals")
            log = helper.output()
            assert "rule jwt_alg" in log
            assert "rule jwt_aud" in log
            assert jwt_parts(token)[1]["aud"] == ["db"]
            assert token not in log
            assert agent.jwt_calls == 3


# --- in-process runs: the core's status and phases are visible ---------------------------------


async def in_thread(fn: Callable[[], Any]) -> Any:
    """`fn` on a thread of its own: not the helper's one worker (the loop's default
    executor), which a blocking wait of the test's would hold."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="test") as pool:
        return await loop.run_in_executor(pool, fn)


def run_in_process(cfg: config.Config,
                   scenario: Callable[[app.Core], Awaitable[None]]) -> int:
    """Run the real core on this (main) thread's loop next to `scenario`; its exit code."""

    async def main() -> int:
        core = app.build(cfg)
        task = asyncio.create_task(core.run())
        try:
            await asyncio.wait_for(scenario(core), 50)
        finally:
            core.stop.set()
        return await asyncio.wait_for(task, 10)

    return asyncio.run(main())


def load_cfg(tmp_path: Path, agent: DevAgentThread, certs: Path, body: str) -> config.Config:
    return config.load(write_conf(tmp_path, agent, certs, body))


def test_expired_jwt_is_removed_when_renewal_fails_and_health_goes_bad(
        tmp_path: Path, certs: Path) -> None:
    with agent_at(tmp_path, jwt_ttl=2) as agent:
        cfg = load_cfg(tmp_path, agent, certs,
                       'jwt_svids = [{jwt_audience = "db", jwt_svid_file_name = "db.token"}]\n')
        token_path = certs / "db.token"
        key = str(token_path)

        async def scenario(core: app.Core) -> None:
            await in_thread(lambda: wait_for(
                lambda: core.status.jwt_write_status.get(key) == WRITTEN, what="first token"))
            assert core.status.live()
            assert core.status.ready()
            await in_thread(lambda: agent.fail_jwt_svids(grpc.StatusCode.UNAVAILABLE))
            await in_thread(lambda: wait_for(lambda: not token_path.exists(), timeout=8,
                                             what="expired token removed"))
            assert core.status.jwt_write_status[key] == FAILED
            assert not core.status.live()
            assert "db" not in core.status.jwt_expiry
            await in_thread(lambda: agent.fail_jwt_svids(None))
            await in_thread(lambda: wait_for(
                lambda: core.status.jwt_write_status.get(key) == WRITTEN, timeout=10,
                what="renewed after the agent recovered"))
            assert token_path.exists()
            assert core.status.live()

        assert run_in_process(cfg, scenario) == 0


def test_an_expired_token_left_by_an_earlier_run_is_removed_at_start(
        tmp_path: Path, certs: Path) -> None:
    with agent_at(tmp_path) as agent:
        stale = certs / "db.token"
        stale.write_text(agent.ca.mint_jwt_svid(agent.spiffe_id, ["db"], -60))
        agent.fail_jwt_svids(grpc.StatusCode.UNAVAILABLE)
        cfg = load_cfg(tmp_path, agent, certs,
                       'jwt_svids = [{jwt_audience = "db", jwt_svid_file_name = "db.token"}]\n')

        async def scenario(core: app.Core) -> None:
            await in_thread(lambda: wait_for(lambda: not stale.exists(), what="stale removed"))
            assert not core.ready.is_set()

        assert run_in_process(cfg, scenario) == 0


X509_CONF = """\
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
"""


def test_ca_rotation_that_changes_only_the_bundle_is_written_and_reloads(
        tmp_path: Path, certs: Path) -> None:
    with agent_at(tmp_path) as agent:
        cfg = load_cfg(tmp_path, agent, certs, X509_CONF)
        changes: asyncio.Queue[list[Path]] = asyncio.Queue()

        class OnChange(Feature):
            async def changed(self, pipeline: str, snapshot: X509Snapshot,
                              changed: Sequence[Path]) -> None:
                changes.put_nowait(list(changed))

        async def scenario(core: app.Core) -> None:
            core.features += (OnChange(),)
            await asyncio.wait_for(core.ready.wait(), 10)
            svid_before = (certs / "svid.pem").read_bytes()
            await in_thread(lambda: agent.rotate_ca(reissue=False))
            changed = await asyncio.wait_for(changes.get(), 10)
            assert changed == [certs / "svid_bundle.pem"]
            assert len(read_certs(certs / "svid_bundle.pem")) == 2
            assert (certs / "svid.pem").read_bytes() == svid_before

        assert run_in_process(cfg, scenario) == 0


# --- federation across every bundle output ------------------------------------------------------

FEDERATION_CONF = X509_CONF + """\
include_federated_domains = true
credential_folder = "spiffe"
spiffe_bundle_map_file_name = "bundle_map.json"
jwt_bundle_file_name = "jwt_bundle.json"
"""


def trust_domains_in_every_output(certs: Path) -> dict[str, set[str]]:
    bundle_subjects = {c.subject.rfc4514_string() for c in read_certs(certs / "svid_bundle.pem")}
    folder = {p.name.split(".spiffe-trust-bundle")[0] for p in (certs / "spiffe").iterdir()
              if p.name.endswith(".spiffe-trust-bundle.x509.pem") and p.stat().st_size}
    return {
        "svid_bundle_file_name": {td for td in (TD, PARTNER)
                                  if any(td in s for s in bundle_subjects)},
        "credential_folder": folder,
        "spiffe_bundle_map_file_name": set(bundle_map_certificates(
            (certs / "bundle_map.json").read_bytes())),
        "jwt_bundle_file_name": set(json.loads((certs / "jwt_bundle.json").read_bytes())),
    }


def test_federated_domain_appears_in_and_disappears_from_every_bundle_output(
        tmp_path: Path, certs: Path) -> None:
    (certs / "spiffe").mkdir()
    with agent_at(tmp_path) as agent:
        path = write_conf(tmp_path, agent, certs, FEDERATION_CONF)
        with HelperProcess("-config", str(path), log=tmp_path / "helper.log"):
            own = {TD}
            every = dict.fromkeys(("svid_bundle_file_name", "credential_folder",
                                   "spiffe_bundle_map_file_name", "jwt_bundle_file_name"))

            def outputs_are(expected: set[str]) -> bool:
                try:
                    return trust_domains_in_every_output(certs) == dict.fromkeys(every, expected)
                except (FileNotFoundError, ValueError):
                    return False

            wait_for(lambda: outputs_are(own), what="own trust domain everywhere")
            agent.set_federated([PARTNER])
            wait_for(lambda: outputs_are({TD, PARTNER}), what="partner in every output")
            bundles = check_credential_folder(certs / "spiffe", {TD, PARTNER}, TD)
            assert bundles[PARTNER][0].subject == agent.federated_cas[PARTNER].root.subject
            agent.set_federated([])
            wait_for(lambda: outputs_are(own), what="partner gone from every output")
            check_credential_folder(certs / "spiffe", {TD}, TD)
            assert (certs / "spiffe" / f"{PARTNER}.spiffe-trust-bundle.x509.pem").read_bytes() \
                == b""


# --- PKCS#12, combined PEM, credential folder, bundle map, owner and group ----------------------

FORMATS_CONF = """\
svid_combined_file_name = "haproxy.pem"
pkcs12_file_name = "keystore.p12"
pkcs12_password_file = "{password}"
credential_folder = "spiffe"
spiffe_bundle_map_file_name = "bundle_map.json"
file_owner = "nobody"
file_group = "{group}"
jwt_svids = [{{jwt_audience = "db", jwt_svid_file_name = "db.token"}}]
key_file_mode = 0640
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_every_format_one_shot_with_owner_group_and_a_keystore_java_reads(
        tmp_path: Path, certs: Path) -> None:
    import grp
    import pwd

    (certs / "spiffe").mkdir()
    password = tmp_path / "p12.pass"
    password.write_text("correct horse\n")
    nobody = pwd.getpwnam("nobody").pw_uid
    group = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    with agent_at(tmp_path, intermediate=True, federate=[PARTNER]) as agent:
        path = write_conf(tmp_path, agent, certs,
                          X509_CONF + FORMATS_CONF.format(password=password, group=group))
        result = run_helper("-config", str(path), "-daemon-mode=false")
        assert result.returncode == 0, result.stderr
        minted = agent.svids[0]
    files = [p for p in certs.rglob("*") if p.is_file()]
    assert sorted(str(p.relative_to(certs)) for p in files) == sorted([
        "svid.pem", "svid_key.pem", "svid_bundle.pem", "haproxy.pem", "keystore.p12",
        "bundle_map.json", "db.token", f"spiffe/{CREDENTIAL_BUNDLE}",
        f"spiffe/{TD}.spiffe-trust-bundle.x509.pem",
        f"spiffe/{PARTNER}.spiffe-trust-bundle.x509.pem"])
    for file in files:
        st = file.stat()
        assert (st.st_uid, st.st_gid) == (nobody, grp.getgrnam(group).gr_gid), file
    assert mode(certs / "haproxy.pem") == 0o640
    assert mode(certs / "keystore.p12") == 0o640
    assert mode(certs / "spiffe" / CREDENTIAL_BUNDLE) == 0o640

    blocks = strict_pem_blocks((certs / "haproxy.pem").read_bytes())
    assert [kind for kind, _ in blocks] == ["PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"]
    assert [der for _, der in blocks[1:]] == [
        c.public_bytes(serialization.Encoding.DER) for c in minted.chain]

    loaded = pkcs12.load_pkcs12((certs / "keystore.p12").read_bytes(), b"correct horse")
    assert loaded.cert is not None
    assert loaded.cert.certificate == minted.leaf
    info = pkcs12_with_openssl(certs / "keystore.p12", "correct horse")
    assert info.count("BEGIN CERTIFICATE") == 2
    if keytool() is not None:
        listing = pkcs12_with_keytool(certs / "keystore.p12", "correct horse")
        assert "Entry type: PrivateKeyEntry" in listing
        assert "Certificate chain length: 2" in listing

    check_credential_folder(certs / "spiffe", {TD, PARTNER}, TD)
    round_trip = bundle_map_certificates((certs / "bundle_map.json").read_bytes())
    assert round_trip[TD] == list(agent.ca.bundle)
    assert round_trip[PARTNER] == list(agent.federated_cas[PARTNER].bundle)
    assert "correct horse" not in result.stderr


def test_unchanged_identity_rewrites_nothing_after_a_restart(tmp_path: Path,
                                                             certs: Path) -> None:
    (certs / "spiffe").mkdir()
    password = tmp_path / "p12.pass"
    password.write_text("pw")
    body = X509_CONF + (f'pkcs12_file_name = "k.p12"\npkcs12_password_file = "{password}"\n'
                        'credential_folder = "spiffe"\nspiffe_bundle_map_file_name = "m.json"\n'
                        'svid_combined_file_name = "c.pem"\n')
    with agent_at(tmp_path) as agent:
        path = write_conf(tmp_path, agent, certs, body)
        assert run_helper("-config", str(path), "-daemon-mode=false").returncode == 0
        inodes = {p: p.stat().st_ino for p in certs.rglob("*") if p.is_file()}
        assert run_helper("-config", str(path), "-daemon-mode=false").returncode == 0
        assert {p: p.stat().st_ino for p in certs.rglob("*") if p.is_file()} == inodes


def test_credential_folder_is_exported_to_the_child_environment(tmp_path: Path,
                                                                 certs: Path) -> None:
    (certs / "spiffe").mkdir()
    cfg = config.loads(f'cert_dir = "{certs}"\ncredential_folder = "spiffe"\n', environ={})
    # build() hands it to the supervisor, which adds it to cmd's and reload_cmd's environment
    supervising = app.build(dataclasses.replace(cfg, cmd="/bin/true")).features
    (child,) = [f for f in supervising if isinstance(f, Supervisor)]
    assert child.child_env["SPIFFE_CREDENTIAL_FOLDER"] == str(certs / "spiffe")


# --- several identities from one stream ---------------------------------------------------------

IDENTITIES_HCL = """\
x509_svids = [
  {hint = "db", svid_file_name = "db.pem", svid_key_file_name = "db_key.pem",
   svid_bundle_file_name = "db_bundle.pem"},
  {spiffe_id = "spiffe://example.org/web", svid_file_name = "web.pem",
   svid_key_file_name = "web_key.pem", svid_bundle_file_name = "web_bundle.pem"},
]
"""

IDENTITIES_TOML = """\
[[x509_svids]]
hint = "db"
svid_file_name = "db.pem"
svid_key_file_name = "db_key.pem"
svid_bundle_file_name = "db_bundle.pem"

[[x509_svids]]
spiffe_id = "spiffe://example.org/web"
svid_file_name = "web.pem"
svid_key_file_name = "web_key.pem"
svid_bundle_file_name = "web_bundle.pem"
"""


def uri_of(path: Path) -> str:
    leaf = read_certs(path)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return str(san.get_values_for_type(x509.UniformResourceIdentifier)[0])


@pytest.mark.parametrize(("name", "body"), [("helper.conf", X509_CONF + IDENTITIES_HCL),
                                            ("helper.toml", X509_CONF + IDENTITIES_TOML)],
                         ids=["hcl", "toml"])
def test_several_identities_are_written_from_one_stream(tmp_path: Path, certs: Path, name: str,
                                                        body: str) -> None:
    svids = [("spiffe://example.org/db", "db"), ("spiffe://example.org/web", "")]
    with agent_at(tmp_path, svids=svids) as agent:
        path = write_conf(tmp_path, agent, certs, body, name=name)
        result = run_helper("-config", str(path), "-daemon-mode=false")
        assert result.returncode == 0, result.stderr
        assert agent.calls == 1
    assert uri_of(certs / "svid.pem") == agent.spiffe_id
    assert uri_of(certs / "db.pem") == "spiffe://example.org/db"
    assert uri_of(certs / "web.pem") == "spiffe://example.org/web"
    for stem in ("db", "web"):
        key = serialization.load_pem_private_key((certs / f"{stem}_key.pem").read_bytes(), None)
        assert key.public_key() == read_certs(certs / f"{stem}.pem")[0].public_key()
        assert mode(certs / f"{stem}_key.pem") == 0o600


def test_an_identity_missing_from_the_stream_refuses_the_message(tmp_path: Path,
                                                                  certs: Path) -> None:
    with agent_at(tmp_path, svids=[("spiffe://example.org/db", "db")]) as agent:
        path = write_conf(tmp_path, agent, certs,
                          X509_CONF + IDENTITIES_HCL + "startup_timeout = 1\n")
        result = run_helper("-config", str(path), "-daemon-mode=false")
    assert result.returncode == 1
    assert "spiffe_id_not_found" in result.stderr
    assert list(certs.iterdir()) == []
