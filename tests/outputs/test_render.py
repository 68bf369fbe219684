from __future__ import annotations

import base64
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pki
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from helper.errors import Refused
from helper.identity.snapshot import X509Snapshot
from helper.identity.x509 import validate_x509_response
from helper.outputs.pem import OutputFile, X509OutputConfig, pem_block, render_x509

TD = "example.org"


@dataclass(frozen=True)
class Cfg:
    """The X.509 output part of Config, for tests."""

    cert_dir: str = "/certs"
    svid_file_name: str = "svid.pem"
    svid_key_file_name: str = "svid_key.pem"
    svid_bundle_file_name: str = "svid_bundle.pem"
    add_intermediates_to_bundle: bool = False
    include_federated_domains: bool = False
    omit_expired: bool = False
    cert_file_mode: int = 0o644
    key_file_mode: int = 0o600
    hint: str = ""

    def output_path(self, name: str) -> Path:
        return Path(self.cert_dir) / name if self.cert_dir else Path(name)


def _conforms(cfg: X509OutputConfig) -> X509OutputConfig:
    return cfg


def pem(certs: Sequence[pki.Issued | x509.Certificate]) -> bytes:
    """What Go writes: each cert's PEM, in order (via cryptography's own PEM encoder)."""
    return b"".join(
        (c.cert if isinstance(c, pki.Issued) else c).public_bytes(serialization.Encoding.PEM)
        for c in certs
    )


@pytest.fixture(scope="module")
def ca() -> pki.TrustDomainCA:
    return pki.TrustDomainCA.create(TD)


@pytest.fixture(scope="module")
def leaf(ca: pki.TrustDomainCA) -> pki.Issued:
    return ca.leaf()


@pytest.fixture(scope="module")
def feds() -> dict[str, pki.Issued]:
    # deliberately not in sorted order
    return {name: pki.make_root(name) for name in ("zeta.org", "alpha.org", "mid.org")}


@pytest.fixture(scope="module")
def snapshot(ca: pki.TrustDomainCA, leaf: pki.Issued, feds: dict[str, pki.Issued]) -> X509Snapshot:
    resp = pki.response(ca.svid(leaf=leaf), federated={k: [v] for k, v in feds.items()})
    return validate_x509_response(resp)


def by_name(files: list[OutputFile]) -> dict[str, OutputFile]:
    return {f.path.name: f for f in files}


def test_default_layout(snapshot: X509Snapshot, ca: pki.TrustDomainCA, leaf: pki.Issued) -> None:
    files = render_x509(snapshot, _conforms(Cfg()))
    assert [f.path for f in files] == [
        Path("/certs/svid.pem"),
        Path("/certs/svid_key.pem"),
        Path("/certs/svid_bundle.pem"),
    ]
    svid, key, bundle = files
    assert svid.data == pem([leaf, ca.intermediate])
    assert (svid.mode, svid.secret) == (0o644, False)
    assert key.data == leaf.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert key.data.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert (key.mode, key.secret) == (0o600, True)
    assert bundle.data == pem([ca.root])
    assert (bundle.mode, bundle.secret) == (0o644, False)


def test_key_is_never_in_repr(snapshot: X509Snapshot) -> None:
    key = render_x509(snapshot, Cfg())[1]
    assert b"PRIVATE" in key.data
    assert "PRIVATE" not in repr(key)


def test_modes_from_config(snapshot: X509Snapshot) -> None:
    files = render_x509(snapshot, Cfg(cert_file_mode=0o444, key_file_mode=0o640))
    assert [f.mode for f in files] == [0o444, 0o640, 0o444]


def test_empty_cert_dir_is_relative(snapshot: X509Snapshot) -> None:
    files = render_x509(snapshot, Cfg(cert_dir=""))
    assert [str(f.path) for f in files] == ["svid.pem", "svid_key.pem", "svid_bundle.pem"]


def test_add_intermediates_to_bundle(
    snapshot: X509Snapshot, ca: pki.TrustDomainCA, leaf: pki.Issued
) -> None:
    files = by_name(render_x509(snapshot, Cfg(add_intermediates_to_bundle=True)))
    assert files["svid.pem"].data == pem([leaf])
    assert files["svid_bundle.pem"].data == pem([ca.root, ca.intermediate])


def test_include_federated_domains_sorted(
    snapshot: X509Snapshot, ca: pki.TrustDomainCA, feds: dict[str, pki.Issued]
) -> None:
    files = by_name(render_x509(snapshot, Cfg(include_federated_domains=True)))
    expected = [ca.root, feds["alpha.org"], feds["mid.org"], feds["zeta.org"]]
    assert files["svid_bundle.pem"].data == pem(expected)


def test_go_order_intermediates_before_federated(
    snapshot: X509Snapshot, ca: pki.TrustDomainCA, leaf: pki.Issued, feds: dict[str, pki.Issued]
) -> None:
    cfg = Cfg(add_intermediates_to_bundle=True, include_federated_domains=True)
    files = by_name(render_x509(snapshot, cfg))
    assert files["svid.pem"].data == pem([leaf])
    expected = [ca.root, ca.intermediate, feds["alpha.org"], feds["mid.org"], feds["zeta.org"]]
    assert files["svid_bundle.pem"].data == pem(expected)


def test_federated_left_out_by_default(snapshot: X509Snapshot, ca: pki.TrustDomainCA) -> None:
    files = by_name(render_x509(snapshot, Cfg()))
    assert files["svid_bundle.pem"].data == pem([ca.root])


def test_include_federated_takes_other_svids_trust_domains(ca: pki.TrustDomainCA) -> None:
    # Go's bundle set holds every SVID's own bundle too; all but the chosen SVID's are "others"
    other = pki.TrustDomainCA.create("other.org")
    snap = validate_x509_response(pki.response(ca.svid(), other.svid(hint="o")))
    files = by_name(render_x509(snap, Cfg(include_federated_domains=True, hint="o")))
    assert files["svid_bundle.pem"].data == pem([other.root, ca.root])


def test_omit_expired_bundle(ca: pki.TrustDomainCA, leaf: pki.Issued) -> None:
    now = datetime.now(timezone.utc)
    old = pki.make_root(
        TD, cn="old", not_before=now - timedelta(days=9), not_after=now - timedelta(days=1)
    )
    fed_old = pki.make_root(
        "fed.org", not_before=now - timedelta(days=9), not_after=now - timedelta(days=1)
    )
    fed_new = pki.make_root("fed.org")
    msg = pki.svid_message(ca.spiffe_id(), [leaf, ca.intermediate], [old, ca.root])
    snap = validate_x509_response(pki.response(msg, federated={"fed.org": [fed_old, fed_new]}))
    keep = by_name(render_x509(snap, Cfg(include_federated_domains=True)))
    assert keep["svid_bundle.pem"].data == pem([old, ca.root, fed_old, fed_new])
    cfg = Cfg(include_federated_domains=True, omit_expired=True)
    drop = by_name(render_x509(snap, cfg))
    assert drop["svid_bundle.pem"].data == pem([ca.root, fed_new])
    assert drop["svid.pem"].data == pem([leaf, ca.intermediate])


def test_omit_expired_svid_file(snapshot: X509Snapshot, ca: pki.TrustDomainCA) -> None:
    # render is pure and takes `now`; past the leaf's notAfter (1 h) but not the
    # intermediate's (12 h) only the leaf goes
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    files = by_name(render_x509(snapshot, Cfg(omit_expired=True), now=later))
    assert files["svid.pem"].data == pem([ca.intermediate])
    files = by_name(render_x509(snapshot, Cfg(omit_expired=False), now=later))
    assert files["svid.pem"].data.count(b"BEGIN CERTIFICATE") == 2


def test_omit_expired_with_moved_intermediates(
    snapshot: X509Snapshot, ca: pki.TrustDomainCA
) -> None:
    much_later = datetime.now(timezone.utc) + timedelta(hours=13)
    cfg = Cfg(omit_expired=True, add_intermediates_to_bundle=True)
    files = by_name(render_x509(snapshot, cfg, now=much_later))
    assert files["svid.pem"].data == b""
    assert files["svid_bundle.pem"].data == pem([ca.root])


def test_hint_selects_svid(ca: pki.TrustDomainCA) -> None:
    a, b = ca.leaf("/a"), ca.leaf("/b")
    snap = validate_x509_response(
        pki.response(ca.svid("/a", leaf=a), ca.svid("/b", leaf=b, hint="bee"))
    )
    default = by_name(render_x509(snap, Cfg()))
    assert default["svid.pem"].data == pem([a, ca.intermediate])
    hinted = by_name(render_x509(snap, Cfg(hint="bee")))
    assert hinted["svid.pem"].data == pem([b, ca.intermediate])
    assert hinted["svid_key.pem"].data == pem_block("PRIVATE KEY", b.key_der)
    with pytest.raises(Refused) as info:
        render_x509(snap, Cfg(hint="nope"))
    assert info.value.rule == "hint_not_found"


def test_missing_file_names_rejected(snapshot: X509Snapshot) -> None:
    with pytest.raises(ValueError, match="svid_key_file_name"):
        render_x509(snapshot, Cfg(svid_key_file_name=""))


# --- PEM bytes exactly like Go's pem.EncodeToMemory --------------------------------------------


def test_pem_block_matches_cryptography(leaf: pki.Issued, ca: pki.TrustDomainCA) -> None:
    for cert in (leaf.cert, ca.intermediate.cert, ca.root.cert):
        der = cert.public_bytes(serialization.Encoding.DER)
        assert pem_block("CERTIFICATE", der) == cert.public_bytes(serialization.Encoding.PEM)
    rsa_key = pki.new_key("rsa")
    assert pem_block("PRIVATE KEY", pki.pkcs8_der(rsa_key)) == rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize("size", [0, 1, 47, 48, 49, 96, 1000])
def test_pem_block_go_format(size: int) -> None:
    der = bytes(range(256)) * 4
    der = der[:size]
    out = pem_block("CERTIFICATE", der)
    lines = out.split(b"\n")
    assert lines[0] == b"-----BEGIN CERTIFICATE-----"
    assert lines[-2] == b"-----END CERTIFICATE-----"
    assert lines[-1] == b""  # ends with exactly one newline
    body = lines[1:-2]
    assert all(0 < len(line) <= 64 for line in body)
    assert all(len(line) == 64 for line in body[:-1])
    assert base64.b64decode(b"".join(body)) == der


def test_output_file_is_frozen(snapshot: X509Snapshot) -> None:
    f = render_x509(snapshot, Cfg())[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.mode = 0o777  # type: ignore[misc]
