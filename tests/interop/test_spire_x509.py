"""The helper against a real SPIRE server and agent: X.509 and JWT, rotations driven by
SPIRE itself, a CA rotation through `spire-server localauthority`, nginx served with
SPIRE-issued SVIDs (cases 1-4 and 8 of the interop issue). One SPIRE for the module, one
entry (so "the first SVID" is unambiguous), every assertion on the files written."""

from __future__ import annotations

import base64
import datetime
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from harness import daemon_workdir, render_example, served_cert_https, wait_listening
from spire import (
    X509_FILES,
    Spire,
    check_x509_files,
    key_matches,
    load_certs,
    out_and_conf,
    require_peers,
    spire,
    uri_sans,
    verify_chain,
)
from util import HelperProcess, free_port, leaf_serial, run_helper, wait_for

# SPIRE starts within the first test of a module: a longer timeout than the default.
pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

X509_TTL = 20  # s: SPIRE's agent renews at half-life, checked every 5 s


@pytest.fixture(scope="module")
def sp() -> Iterator[Spire]:
    with spire("a.test") as s:
        s.entry("/workload", x509_ttl=X509_TTL, jwt_ttl=30, dns=["localhost"])
        s.agent.wait_serving(["spiffe://a.test/workload"])
        yield s


def test_one_shot_writes_spires_svid_key_and_a_chain_that_verifies_to_the_bundle(sp, tmp_path):
    out, conf = out_and_conf(tmp_path, sp.socket, **X509_FILES)
    result = run_helper("-config", str(conf), "-daemon-mode=false", timeout=60)
    assert result.returncode == 0, result.stderr
    leaf, root = check_x509_files(out, "spiffe://a.test/workload")
    # The bundle is SPIRE's own: the root the server shows.
    shown = x509.load_pem_x509_certificates(sp.server.cmd("bundle", "show").stdout.encode())
    assert root in shown
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= \
        datetime.timedelta(seconds=X509_TTL + 60)
    assert sorted(p.name for p in out.iterdir()) == sorted(X509_FILES.values())


@pytest.mark.timeout(120)
def test_daemon_follows_two_spire_rotations_and_a_reader_never_sees_a_torn_file(sp, tmp_path):
    out, conf = out_and_conf(tmp_path, sp.socket, **X509_FILES)
    svid = out / "svid.pem"
    problems: list[str] = []
    reads, mismatches = [0], [0]
    stop = threading.Event()

    def consistent_pair() -> bool:
        try:
            return key_matches(out / "svid_key.pem", load_certs(svid)[0])
        except (FileNotFoundError, ValueError):
            return False

    def reader() -> None:
        # Each file always parses whole. The cert and the key are two files renamed one
        # right after the other: a reader between the two renames pairs the new cert with
        # the old key, for that instant only; re-reading gives a matching pair at once.
        while not stop.is_set():
            try:
                chain = load_certs(svid)
                matches = key_matches(out / "svid_key.pem", chain[0])
                load_certs(out / "svid_bundle.pem")
            except FileNotFoundError:
                continue
            except ValueError as exc:  # a half-written PEM
                problems.append(f"torn read: {exc}")
                continue
            reads[0] += 1
            if not matches:
                mismatches[0] += 1
                try:
                    wait_for(consistent_pair, 1.0, what="a matching cert and key")
                except AssertionError as exc:
                    problems.append(str(exc))

    with HelperProcess("-config", str(conf), log=tmp_path / "helper.log") as helper:
        wait_for(lambda: leaf_serial(svid), 30, what="first SVID written")
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        try:
            seen = [leaf_serial(svid)]
            check_x509_files(out, "spiffe://a.test/workload")
            for n in (1, 2):
                # SPIRE renews at half of 20 s; its agent syncs every 5 s.
                wait_for(lambda: leaf_serial(svid) not in (None, *seen), 3 * X509_TTL,
                         what=f"SPIRE rotation {n} on disk")
                seen.append(leaf_serial(svid))
                check_x509_files(out, "spiffe://a.test/workload")
        finally:
            stop.set()
            thread.join(10)
        assert helper.proc.poll() is None, helper.output()
    assert len(set(seen)) == 3
    assert reads[0] > 10
    assert problems == []
    print(f"{reads[0]} reads, {mismatches[0]} caught between the cert and key renames")


def _jwt_bundle(path: Path) -> dict[str, dict]:
    """Go's JWT bundle file: {trust domain: base64(JWKS JSON)}."""
    return {td: json.loads(base64.b64decode(jwks))
            for td, jwks in json.loads(path.read_text()).items()}


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _verify_jwt(token: str, jwks: dict) -> dict:
    head, body, sig = token.split(".")
    header = json.loads(_b64url(head))
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert header["alg"] == "ES256", header
    assert key["kty"] == "EC", key
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(_b64url(key["x"]), "big"), int.from_bytes(_b64url(key["y"]), "big"),
        ec.SECP256R1()).public_key()
    raw = _b64url(sig)
    der = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                     int.from_bytes(raw[32:], "big"))
    public.verify(der, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    return json.loads(_b64url(body))


@pytest.mark.timeout(120)
def test_jwt_svid_refreshed_before_expiry_verifies_with_spires_keys(sp, tmp_path):
    out, conf = out_and_conf(tmp_path, sp.socket,
                             jwt_svids=[{"jwt_audience": "db", "jwt_svid_file_name": "db.token"}],
                             jwt_bundle_file_name="jwt_bundle.json")
    token_file = out / "db.token"
    with HelperProcess("-config", str(conf), log=tmp_path / "helper.log") as helper:
        wait_for(token_file.exists, 30, what="JWT-SVID written")
        first = token_file.read_text()
        bundles = _jwt_bundle(out / "jwt_bundle.json")
        # The JWT bundle file holds SPIRE's JWT keys: the ones the server shows.
        shown = json.loads(sp.server.bundle_spiffe())
        spire_kids = {k["kid"] for k in shown["keys"] if k.get("use") == "jwt-svid"}
        assert {k["kid"] for k in bundles["a.test"]["keys"]} == spire_kids
        claims = _verify_jwt(first, bundles["a.test"])
        assert claims["sub"] == "spiffe://a.test/workload"
        assert claims["aud"] in ("db", ["db"])
        # SPIRE itself accepts it.
        validated = sp.agent.run("api", "validate", "jwt", "-audience", "db", "-svid", first)
        assert validated.returncode == 0, validated.stdout + validated.stderr
        # Refreshed before it expires (30 s tokens: at about half their life).
        wait_for(lambda: token_file.read_text() != first, 30, what="JWT-SVID refreshed")
        second = token_file.read_text()
        renewed = _verify_jwt(second, _jwt_bundle(out / "jwt_bundle.json")["a.test"])
        assert renewed["exp"] > claims["exp"]
        assert claims["exp"] > renewed["iat"], "refreshed only after the old token expired"
        assert helper.proc.poll() is None


@pytest.mark.timeout(120)
def test_nginx_serves_spires_leaf_before_and_after_a_spire_rotation(sp):
    require_peers("spire-agent")
    from harness import require_binaries

    require_binaries("nginx")
    with daemon_workdir("spire-nginx") as work:
        port = free_port()
        for sub in ("certs", "www", "tmp"):
            (work / sub).mkdir()
        (work / "www" / "index.html").write_text("hello\n")
        files = render_example("nginx", work, {"WORK": str(work), "PORT": str(port),
                                               "AGENT": str(sp.socket)})
        svid, bundle = work / "certs" / "svid.pem", work / "certs" / "svid_bundle.pem"
        with HelperProcess("-config", str(files["helper.hcl"]),
                           log=work / "helper.log") as helper:
            wait_listening(port, helper, "nginx (started by the helper)")
            served = served_cert_https(port, bundle)  # verified against the written bundle
            assert served.serial_number == leaf_serial(svid)
            assert uri_sans(served) == ["spiffe://a.test/workload"]
            before = served.serial_number
            wait_for(lambda: leaf_serial(svid) not in (None, before), 3 * X509_TTL,
                     what="SPIRE rotation on disk")
            rotated = leaf_serial(svid)

            def serving_new() -> bool:
                try:
                    return served_cert_https(port, bundle).serial_number == rotated
                except OSError:
                    return False

            wait_for(serving_new, 10, what="nginx serving SPIRE's new leaf")
            verify_chain(load_certs(svid), load_certs(bundle))


@pytest.mark.timeout(180)
def test_ca_rotation_writes_the_new_bundle_and_the_next_leaf_verifies_against_it(sp, tmp_path):
    """Last in the module: it changes the CA for every test after it."""
    out, conf = out_and_conf(tmp_path, sp.socket, **X509_FILES)
    bundle = out / "svid_bundle.pem"
    with HelperProcess("-config", str(conf), log=tmp_path / "helper.log") as helper:
        wait_for(lambda: leaf_serial(out / "svid.pem"), 30, what="first SVID written")
        _, old_root = check_x509_files(out, "spiffe://a.test/workload")
        assert load_certs(bundle) == [old_root]
        prepared = json.loads(sp.server.cmd("localauthority", "x509", "prepare",
                                            "-output", "json").stdout)
        authority = prepared["prepared_authority"]["authority_id"]
        # The prepared root reaches the bundle file (the agent syncs every 5 s).
        wait_for(lambda: len(load_certs(bundle)) == 2, 30, what="prepared root in the bundle")
        new_root = next(c for c in load_certs(bundle) if c != old_root)
        sp.server.cmd("localauthority", "x509", "activate", "-authorityID", authority)

        def signed_by_new_root() -> bool:
            try:
                chain = load_certs(out / "svid.pem")
                return verify_chain(chain, load_certs(bundle)) == new_root
            except (ValueError, AssertionError):
                return False

        wait_for(signed_by_new_root, 4 * X509_TTL, what="a leaf from the new authority")
        _, root = check_x509_files(out, "spiffe://a.test/workload")
        assert root == new_root
        # The old root stays while it is still trusted (not expired, not revoked).
        assert set(load_certs(bundle)) == {old_root, new_root}
        assert helper.proc.poll() is None
