"""The formats beyond the Go layout (helper/outputs/formats.py), checked against the
standards they implement and read back with real tools. Pure rendering; files are written
only to feed the folder checks and openssl/keytool."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path

import pki
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from spiffe_formats import (
    CREDENTIAL_BUNDLE,
    bundle_map_certificates,
    check_credential_bundle,
    check_credential_folder,
    keytool,
    pkcs12_with_keytool,
    pkcs12_with_openssl,
    strict_pem_blocks,
)
from test_render import Cfg

from helper.identity.snapshot import X509Snapshot
from helper.identity.x509 import validate_x509_response
from helper.outputs.formats import (
    BundleSequences,
    GoLayoutOptions,
    Pkcs12Memo,
    bundle_map_json,
    combined_pem,
    credential_bundle_pem,
    next_sequence,
    pkcs12_bytes,
    render_credential_folder,
    render_go_layout,
    trust_domain_of_file,
)
from helper.outputs.pem import OutputFile, render_x509

TD = "example.org"
NOW = datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def ca() -> pki.TrustDomainCA:
    return pki.TrustDomainCA.create(TD)


@pytest.fixture(scope="module")
def fed() -> pki.Issued:
    return pki.make_root("partner.test")


@pytest.fixture(scope="module")
def snapshot(ca: pki.TrustDomainCA, fed: pki.Issued) -> X509Snapshot:
    federated = {"spiffe://partner.test": [fed]}
    return validate_x509_response(pki.response(ca.svid(), federated=federated))


def der(cert: object) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)  # type: ignore[attr-defined,no-any-return]


def write(files: list[OutputFile]) -> None:
    for file in files:
        file.path.write_bytes(file.data)


# --- combined PEM ------------------------------------------------------------------------------


def test_combined_pem_is_key_then_leaf_then_intermediates(snapshot: X509Snapshot,
                                                          ca: pki.TrustDomainCA) -> None:
    blocks = strict_pem_blocks(combined_pem(snapshot.default))
    assert [kind for kind, _ in blocks] == ["PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"]
    assert blocks[1][1] == der(snapshot.default.leaf)
    assert blocks[2][1] == ca.intermediate.der
    assert blocks[0][1] == snapshot.default.private_key_der


# --- PKCS#12 -----------------------------------------------------------------------------------


def test_pkcs12_with_password_loads_with_cryptography_openssl_and_keytool(
        tmp_path: Path, snapshot: X509Snapshot, ca: pki.TrustDomainCA) -> None:
    svid = snapshot.default
    data = pkcs12_bytes(svid, b"s3cret pass")
    loaded = pkcs12.load_pkcs12(data, b"s3cret pass")
    assert loaded.cert is not None
    assert loaded.key is not None
    assert loaded.cert.friendly_name == b"spiffe"
    assert der(loaded.cert.certificate) == der(svid.leaf)
    assert [der(c.certificate) for c in loaded.additional_certs] == [ca.intermediate.der]
    with pytest.raises(ValueError, match=r"(?i)password|mac"):
        pkcs12.load_pkcs12(data, b"wrong")
    path = tmp_path / "keystore.p12"
    path.write_bytes(data)
    info = pkcs12_with_openssl(path, "s3cret pass")
    assert info.count("BEGIN CERTIFICATE") == 2
    assert "BEGIN PRIVATE KEY" in info
    assert "AES-256-CBC" in info
    if keytool() is not None:
        listing = pkcs12_with_keytool(path, "s3cret pass")
        assert "Alias name: spiffe" in listing
        assert "Entry type: PrivateKeyEntry" in listing
        assert "Certificate chain length: 2" in listing


def test_pkcs12_without_password_has_nothing_encrypted(tmp_path: Path,
                                                        snapshot: X509Snapshot) -> None:
    data = pkcs12_bytes(snapshot.default, None)
    loaded = pkcs12.load_pkcs12(data, None)
    assert loaded.key is not None
    path = tmp_path / "open.p12"
    path.write_bytes(data)
    info = pkcs12_with_openssl(path, "")
    assert "BEGIN PRIVATE KEY" in info
    assert "Encrypted" not in info


def test_pkcs12_memo_keeps_bytes_while_the_identity_is_unchanged(
        snapshot: X509Snapshot, ca: pki.TrustDomainCA) -> None:
    memo = Pkcs12Memo()
    first = memo.render(snapshot.default, b"pw")
    assert memo.render(snapshot.default, b"pw") == first
    assert pkcs12_bytes(snapshot.default, b"pw") != first  # random salts: why the memo exists
    assert memo.render(snapshot.default, b"other") != first
    rotated = validate_x509_response(pki.response(ca.svid())).default
    assert memo.render(rotated, b"other") != memo.render(snapshot.default, b"other")
    restarted = Pkcs12Memo()
    restarted.adopt(first, snapshot.default, b"pw")
    assert restarted.render(snapshot.default, b"pw") == first
    stale = Pkcs12Memo()
    stale.adopt(first, rotated, b"pw")  # a different identity on disk: not adopted
    assert stale.render(rotated, b"pw") != first
    wrong = Pkcs12Memo()
    wrong.adopt(first, snapshot.default, b"changed password")
    assert wrong.data == b""


# --- SPIFFE Filesystem Delivery ----------------------------------------------------------------


def test_credential_folder_meets_every_must_of_the_standard(
        tmp_path: Path, snapshot: X509Snapshot) -> None:
    files = render_credential_folder(snapshot, snapshot.default, tmp_path, key_mode=0o600,
                                     cert_mode=0o644)
    assert [f.path.name for f in files] == [
        "example.org.spiffe-trust-bundle.x509.pem", "partner.test.spiffe-trust-bundle.x509.pem",
        CREDENTIAL_BUNDLE]
    assert [(f.mode, f.secret) for f in files] == [(0o644, False), (0o644, False), (0o600, True)]
    write(files)
    bundles = check_credential_folder(tmp_path, {TD, "partner.test"}, TD)
    assert [der(c) for c in bundles[TD]] == [der(c) for c in snapshot.bundles[TD]]


def test_credential_bundle_drops_a_root_the_agent_sent_along(ca: pki.TrustDomainCA) -> None:
    leaf = ca.leaf()
    message = pki.svid_message(ca.spiffe_id(), [leaf, ca.intermediate, ca.root], [ca.root])
    svid = validate_x509_response(pki.response(message)).default
    assert len(svid.chain) == 3
    _, chain = check_credential_bundle(credential_bundle_pem(svid, [ca.root.cert]),
                                       [ca.root.cert])
    assert [der(c) for c in chain] == [leaf.der, ca.intermediate.der]


def test_departed_trust_domains_are_redacted_and_other_files_left_alone(
        snapshot: X509Snapshot) -> None:
    present = ["gone.org.spiffe-trust-bundle.x509.pem", "partner.test.spiffe-trust-bundle.x509.pem",
               "notes.txt", ".spiffe-trust-bundle.x509.pem",
               ".x.spiffe-trust-bundle.x509.pem.spiffe-helper-tmp.1"]
    files = render_credential_folder(snapshot, snapshot.default, Path("/f"), key_mode=0o600,
                                     cert_mode=0o644, present=present)
    by_name = {f.path.name: f.data for f in files}
    assert by_name["gone.org.spiffe-trust-bundle.x509.pem"] == b""
    assert by_name["partner.test.spiffe-trust-bundle.x509.pem"] != b""
    assert len(files) == 4
    assert trust_domain_of_file("notes.txt") is None


# --- SPIFFE bundle map -------------------------------------------------------------------------


def test_bundle_map_round_trips_to_the_same_certificates(snapshot: X509Snapshot) -> None:
    data = bundle_map_json(snapshot.bundles, BundleSequences(), 1_700_000_000)
    certs = bundle_map_certificates(data)
    assert sorted(certs) == [TD, "partner.test"]
    for td, expected in snapshot.bundles.items():
        assert [der(c) for c in certs[td]] == [der(c) for c in expected]
    assert list(json.loads(data)["trust_domains"]) == [TD, "partner.test"]


def test_bundle_map_sequence_changes_exactly_when_a_bundle_does(
        snapshot: X509Snapshot, ca: pki.TrustDomainCA) -> None:
    sequences = BundleSequences()
    first = json.loads(bundle_map_json(snapshot.bundles, sequences, 1000))["trust_domains"]
    again = json.loads(bundle_map_json(snapshot.bundles, sequences, 2000))["trust_domains"]
    assert again == first
    changed = dict(snapshot.bundles)
    changed[TD] = (*snapshot.bundles[TD], pki.make_root(TD, cn="new root").cert)
    third = json.loads(bundle_map_json(changed, sequences, 3000))["trust_domains"]
    assert third[TD]["spiffe_sequence"] > first[TD]["spiffe_sequence"]
    assert third["partner.test"]["spiffe_sequence"] == first["partner.test"]["spiffe_sequence"]


def test_bundle_map_sequence_survives_a_restart_and_a_clock_going_back(
        snapshot: X509Snapshot) -> None:
    written = bundle_map_json(snapshot.bundles, BundleSequences(), 5000)
    restarted = BundleSequences()
    restarted.seed(written)
    assert bundle_map_json(snapshot.bundles, restarted, 9999) == written
    assert next_sequence(5000, 10) == 5001
    broken = BundleSequences()
    broken.seed(b"not json")
    assert broken.known == {}


# --- one more identity in the Go layout --------------------------------------------------------


def test_go_layout_of_an_identity_matches_render_x509(snapshot: X509Snapshot) -> None:
    cfg = dataclasses.replace(Cfg(), include_federated_domains=True,
                              add_intermediates_to_bundle=True)
    opts = GoLayoutOptions(True, True, False, 0o644, 0o600)
    paths = (Path("/certs/svid.pem"), Path("/certs/svid_key.pem"), Path("/certs/svid_bundle.pem"))
    assert render_go_layout(snapshot, snapshot.default, paths, opts, NOW) == render_x509(
        snapshot, cfg, now=NOW)
