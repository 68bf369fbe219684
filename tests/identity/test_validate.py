from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pki
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from helper._proto import workload_pb2
from helper.errors import Refused
from helper.identity.der import is_pkcs8, split_der_sequences
from helper.identity.x509 import select_svid, validate_x509_response

TD = "example.org"


@pytest.fixture(scope="module")
def ca() -> pki.TrustDomainCA:
    return pki.TrustDomainCA.create(TD)


@pytest.fixture(scope="module")
def other() -> pki.TrustDomainCA:
    return pki.TrustDomainCA.create("other.org")


def refused_rule(resp: workload_pb2.X509SVIDResponse, now: datetime | None = None) -> Refused:
    with pytest.raises(Refused) as info:
        validate_x509_response(resp, now=now)
    assert "\n" not in str(info.value)
    return info.value


# --- good responses --------------------------------------------------------------------------


def test_good_response_gives_snapshot(ca: pki.TrustDomainCA, other: pki.TrustDomainCA) -> None:
    leaf = ca.leaf()
    resp = pki.response(ca.svid(leaf=leaf, hint="web"), federated={"other.org": [other.root]})
    snap = validate_x509_response(resp)
    assert len(snap.svids) == 1
    svid = snap.default
    assert svid.spiffe_id == "spiffe://example.org/workload"
    assert svid.trust_domain == TD
    assert svid.hint == "web"
    assert svid.chain == (leaf.cert, ca.intermediate.cert)
    assert svid.leaf == leaf.cert
    assert svid.intermediates == (ca.intermediate.cert,)
    assert svid.private_key_der == leaf.key_der
    assert dict(snap.bundles) == {TD: (ca.root.cert,), "other.org": (other.root.cert,)}
    assert snap.federated == frozenset({"other.org"})
    assert leaf.key_der.hex() not in repr(svid)
    assert "private_key" not in repr(svid)


def test_leaf_signed_directly_by_root(ca: pki.TrustDomainCA) -> None:
    leaf = pki.make_leaf(ca.root, ca.spiffe_id())
    resp = pki.response(pki.svid_message(ca.spiffe_id(), [leaf], [ca.root]))
    assert validate_x509_response(resp).default.chain == (leaf.cert,)


def test_chain_that_includes_the_root(ca: pki.TrustDomainCA) -> None:
    leaf = ca.leaf()
    msg = pki.svid_message(ca.spiffe_id(), [leaf, ca.intermediate, ca.root], [ca.root])
    assert len(validate_x509_response(pki.response(msg)).default.chain) == 3


def test_federated_key_in_spiffe_id_form(ca: pki.TrustDomainCA, other: pki.TrustDomainCA) -> None:
    resp = pki.response(ca.svid(), federated={"spiffe://other.org": [other.root]})
    snap = validate_x509_response(resp)
    assert snap.bundles["other.org"] == (other.root.cert,)
    assert snap.federated == frozenset({"other.org"})


def test_bundle_with_several_authorities(ca: pki.TrustDomainCA) -> None:
    old = pki.make_root(TD, cn="old root")
    msg = pki.svid_message(ca.spiffe_id(), [ca.leaf(), ca.intermediate], [old, ca.root])
    snap = validate_x509_response(pki.response(msg))
    assert snap.bundles[TD] == (old.cert, ca.root.cert)


@pytest.mark.parametrize("kind", ["ed25519", "rsa-pkcs1", "rsa-pss"])
def test_other_signature_algorithms(kind: str) -> None:
    key_kind: pki.KeyKind = "ed25519" if kind == "ed25519" else "rsa"
    root = pki.make_root(TD, key=pki.new_key(key_kind))
    pss = kind == "rsa-pss"
    inter = pki.make_intermediate(root, key=pki.new_key(key_kind), pss=pss)
    leaf = pki.make_leaf(inter, "spiffe://example.org/w", pss=pss)
    msg = pki.svid_message("spiffe://example.org/w", [leaf, inter], [root])
    assert validate_x509_response(pki.response(msg)).default.leaf == leaf.cert


def test_naive_now_is_taken_as_utc(ca: pki.TrustDomainCA) -> None:
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    validate_x509_response(pki.response(ca.svid()), now=now)


# --- every rule, refused with its name -----------------------------------------------------


def test_no_svids() -> None:
    assert refused_rule(workload_pb2.X509SVIDResponse()).rule == "no_svids"


def test_no_svids_even_with_federated_bundles(other: pki.TrustDomainCA) -> None:
    resp = pki.response(federated={"other.org": [other.root]})
    assert refused_rule(resp).rule == "no_svids"


@pytest.mark.parametrize(
    "spiffe_id",
    ["", "spiffe://Example.org/workload", "https://example.org/workload", "spiffe://example.org/"],
)
def test_spiffe_id_field_invalid(ca: pki.TrustDomainCA, spiffe_id: str) -> None:
    msg = ca.svid()
    msg.spiffe_id = spiffe_id
    err = refused_rule(pki.response(msg))
    assert err.rule == "spiffe_id"


def _corrupt_key(der: bytes) -> bytes:
    return der[:-8] + bytes(8)


def _sec1_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


DER_CASES: dict[str, Callable[[workload_pb2.X509SVID], None]] = {
    "chain garbage": lambda m: setattr(m, "x509_svid", b"\x01\x02\x03"),
    "chain empty": lambda m: setattr(m, "x509_svid", b""),
    "chain truncated": lambda m: setattr(m, "x509_svid", m.x509_svid[:-1]),
    "chain trailing garbage": lambda m: setattr(m, "x509_svid", m.x509_svid + b"\x00"),
    "chain trailing header": lambda m: setattr(m, "x509_svid", m.x509_svid + b"\x30"),
    "chain indefinite length": lambda m: setattr(m, "x509_svid", b"\x30\x80\x00\x00"),
    "chain non-minimal length": lambda m: setattr(m, "x509_svid", b"\x30\x81\x01\x00"),
    "chain huge length": lambda m: setattr(m, "x509_svid", b"\x30\x85\x01\x00\x00\x00\x00"),
    "chain sequence not a cert": lambda m: setattr(m, "x509_svid", b"\x30\x03\x02\x01\x00"),
    "chain corrupt inside": lambda m: setattr(
        m, "x509_svid", m.x509_svid[:4] + b"\x31" + m.x509_svid[5:]
    ),
    "key empty": lambda m: setattr(m, "x509_svid_key", b""),
    "key garbage": lambda m: setattr(m, "x509_svid_key", b"\x04\x05not a key"),
    "key corrupt": lambda m: setattr(m, "x509_svid_key", _corrupt_key(m.x509_svid_key)),
    "key trailing garbage": lambda m: setattr(m, "x509_svid_key", m.x509_svid_key + b"\x00"),
    "bundle garbage": lambda m: setattr(m, "bundle", b"\x30\x03abc"),
    "bundle trailing garbage": lambda m: setattr(m, "bundle", m.bundle + b"\x05\x00"),
}


@pytest.mark.parametrize("case", sorted(DER_CASES))
def test_der_parse(ca: pki.TrustDomainCA, case: str) -> None:
    msg = ca.svid()
    key_der = msg.x509_svid_key
    DER_CASES[case](msg)
    err = refused_rule(pki.response(msg))
    assert err.rule == "der_parse"
    # never a byte of the key in the message, in any rendering
    for chunk in (key_der[-16:], key_der[-16:].hex(), repr(key_der[-16:])):
        assert str(chunk) not in str(err)


def test_der_parse_key_not_pkcs8(ca: pki.TrustDomainCA) -> None:
    leaf = ca.leaf(key=ec.generate_private_key(ec.SECP256R1()))
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
    msg = pki.svid_message(
        ca.spiffe_id(), [leaf, ca.intermediate], [ca.root], key_der=_sec1_key(leaf.key)
    )
    err = refused_rule(pki.response(msg))
    assert err.rule == "der_parse"
    assert "PKCS#8" in err.detail


def test_split_der_long_form_lengths() -> None:
    short = b"\x30\x03" + b"abc"
    one = b"\x30\x81\xc8" + bytes(200)
    two = b"\x30\x82\x01\x2c" + bytes(300)
    three = b"\x30\x83\x01\x00\x00" + bytes(65536)
    assert split_der_sequences(short + one + two + three, "x") == [short, one, two, three]
    assert split_der_sequences(b"", "x") == []


def test_is_pkcs8(ca: pki.TrustDomainCA) -> None:
    leaf = ca.leaf()
    assert is_pkcs8(leaf.key_der)
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
    assert not is_pkcs8(_sec1_key(leaf.key))
    assert not is_pkcs8(b"")
    assert not is_pkcs8(leaf.key_der + b"\x00")


@pytest.mark.parametrize(
    ("uris", "dns"),
    [
        ((), ()),
        ((), ("workload.example.org",)),
        (("spiffe://example.org/workload", "spiffe://example.org/other"), ()),
        (("spiffe://example.org/workload", "spiffe://example.org/workload"), ()),
    ],
)
def test_leaf_one_uri_san(
    ca: pki.TrustDomainCA, uris: tuple[str, ...], dns: tuple[str, ...]
) -> None:
    leaf = ca.leaf(uris=uris, dns=dns)
    assert refused_rule(pki.response(ca.svid(leaf=leaf))).rule == "leaf_one_uri_san"


@pytest.mark.parametrize(
    "uri",
    ["spiffe://example.org/other", "spiffe://other.org/workload", "spiffe://example.org/Workload"],
)
def test_leaf_uri_matches_spiffe_id(ca: pki.TrustDomainCA, uri: str) -> None:
    leaf = ca.leaf(uris=[uri])
    err = refused_rule(pki.response(ca.svid(leaf=leaf)))
    assert err.rule == "leaf_uri_matches_spiffe_id"


def test_leaf_not_ca(ca: pki.TrustDomainCA) -> None:
    leaf = ca.leaf(ca=True, usage={"digital_signature"})
    assert refused_rule(pki.response(ca.svid(leaf=leaf))).rule == "leaf_not_ca"


def test_leaf_without_basic_constraints_is_accepted(ca: pki.TrustDomainCA) -> None:
    leaf = ca.leaf(ca=None)
    validate_x509_response(pki.response(ca.svid(leaf=leaf)))


@pytest.mark.parametrize(
    "usage",
    [
        None,
        {"key_encipherment"},
        {"digital_signature", "key_cert_sign"},
        {"digital_signature", "crl_sign"},
    ],
)
def test_leaf_key_usage(ca: pki.TrustDomainCA, usage: set[str] | None) -> None:
    leaf = ca.leaf(usage=usage)
    assert refused_rule(pki.response(ca.svid(leaf=leaf))).rule == "leaf_key_usage"


@pytest.mark.parametrize(
    ("is_ca", "usage"),
    [(False, pki.CA_USAGE), (None, pki.CA_USAGE), (True, {"crl_sign"}), (True, None)],
)
def test_intermediate_is_ca(
    ca: pki.TrustDomainCA, is_ca: bool | None, usage: frozenset[str] | None
) -> None:
    inter = pki.make_intermediate(ca.root, ca=is_ca, usage=usage)
    leaf = pki.make_leaf(inter, ca.spiffe_id())
    msg = pki.svid_message(ca.spiffe_id(), [leaf, inter], [ca.root])
    assert refused_rule(pki.response(msg)).rule == "intermediate_is_ca"


def test_key_matches_leaf(ca: pki.TrustDomainCA) -> None:
    leaf = ca.leaf()
    stranger = pki.pkcs8_der(pki.new_key())
    msg = pki.svid_message(ca.spiffe_id(), [leaf, ca.intermediate], [ca.root], key_der=stranger)
    assert refused_rule(pki.response(msg)).rule == "key_matches_leaf"


def test_key_of_another_type_does_not_match(ca: pki.TrustDomainCA) -> None:
    leaf = ca.leaf()
    stranger = pki.pkcs8_der(pki.new_key("ed25519"))
    msg = pki.svid_message(ca.spiffe_id(), [leaf, ca.intermediate], [ca.root], key_der=stranger)
    assert refused_rule(pki.response(msg)).rule == "key_matches_leaf"


def test_bundle_present(ca: pki.TrustDomainCA) -> None:
    msg = pki.svid_message(ca.spiffe_id(), [ca.leaf(), ca.intermediate], [])
    assert refused_rule(pki.response(msg)).rule == "bundle_present"


def test_bundle_present_not_satisfied_by_federated(ca: pki.TrustDomainCA) -> None:
    msg = pki.svid_message(ca.spiffe_id(), [ca.leaf(), ca.intermediate], [])
    assert refused_rule(pki.response(msg, federated={"other.org": [ca.root]})).rule == (
        "bundle_present"
    )


def test_leaf_expired(ca: pki.TrustDomainCA) -> None:
    now = datetime.now(timezone.utc)
    leaf = ca.leaf(not_before=now - timedelta(hours=2), not_after=now - timedelta(minutes=1))
    assert refused_rule(pki.response(ca.svid(leaf=leaf))).rule == "leaf_expired"


def test_leaf_expired_by_given_now(ca: pki.TrustDomainCA) -> None:
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    assert refused_rule(pki.response(ca.svid()), now=later).rule == "leaf_expired"


def test_leaf_not_yet_valid(ca: pki.TrustDomainCA) -> None:
    now = datetime.now(timezone.utc)
    leaf = ca.leaf(not_before=now + timedelta(minutes=5), not_after=now + timedelta(hours=1))
    assert refused_rule(pki.response(ca.svid(leaf=leaf))).rule == "leaf_not_yet_valid"


@pytest.mark.parametrize(
    ("start", "end", "rule"),
    [(-5, -1, "intermediate_expired"), (1, 5, "intermediate_not_yet_valid")],
)
def test_intermediate_validity(ca: pki.TrustDomainCA, start: int, end: int, rule: str) -> None:
    now = datetime.now(timezone.utc)
    inter = pki.make_intermediate(
        ca.root, not_before=now + timedelta(hours=start), not_after=now + timedelta(hours=end)
    )
    leaf = pki.make_leaf(inter, ca.spiffe_id())
    msg = pki.svid_message(ca.spiffe_id(), [leaf, inter], [ca.root])
    assert refused_rule(pki.response(msg)).rule == rule


def test_chain_verifies_impostor_ca_with_same_name(ca: pki.TrustDomainCA) -> None:
    impostor = pki.TrustDomainCA.create(TD)  # same subject names, different keys
    msg = pki.svid_message(ca.spiffe_id(), [impostor.leaf(), impostor.intermediate], [ca.root])
    err = refused_rule(pki.response(msg))
    assert err.rule == "chain_verifies"


def test_chain_verifies_missing_intermediate(ca: pki.TrustDomainCA) -> None:
    msg = pki.svid_message(ca.spiffe_id(), [ca.leaf()], [ca.root])
    assert refused_rule(pki.response(msg)).rule == "chain_verifies"


def test_chain_verifies_wrong_order(ca: pki.TrustDomainCA) -> None:
    inter2 = pki.make_intermediate(ca.intermediate, cn="second")
    leaf = pki.make_leaf(inter2, ca.spiffe_id())
    msg = pki.svid_message(ca.spiffe_id(), [leaf, ca.intermediate, inter2], [ca.root])
    assert refused_rule(pki.response(msg)).rule == "chain_verifies"


def test_chain_verifies_authority_name_matches_but_key_differs(ca: pki.TrustDomainCA) -> None:
    # the intermediate names the bundle root as issuer but was signed by another key
    fake_root = pki.make_root(TD)  # same CN as ca.root
    inter = pki.make_intermediate(fake_root)
    leaf = pki.make_leaf(inter, ca.spiffe_id())
    msg = pki.svid_message(ca.spiffe_id(), [leaf, inter], [ca.root])
    assert refused_rule(pki.response(msg)).rule == "chain_verifies"


def test_chain_verifies_other_trust_domains_bundle(
    ca: pki.TrustDomainCA, other: pki.TrustDomainCA
) -> None:
    msg = pki.svid_message(ca.spiffe_id(), [ca.leaf(), ca.intermediate], [other.root])
    resp = pki.response(msg, federated={"third.org": [ca.root]})
    assert refused_rule(resp).rule == "chain_verifies"


def test_chain_verifies_expired_authority() -> None:
    now = datetime.now(timezone.utc)
    root = pki.make_root(TD, not_before=now - timedelta(days=2), not_after=now - timedelta(days=1))
    inter = pki.make_intermediate(root)
    leaf = pki.make_leaf(inter, "spiffe://example.org/workload")
    msg = pki.svid_message("spiffe://example.org/workload", [leaf, inter], [root])
    err = refused_rule(pki.response(msg))
    assert err.rule == "chain_verifies"
    assert "expired" in err.detail


def test_bundle_consistent(ca: pki.TrustDomainCA) -> None:
    old = pki.make_root(TD, cn="old")
    first = ca.svid("/a")
    second = pki.svid_message(ca.spiffe_id("/b"), [ca.leaf("/b"), ca.intermediate], [old, ca.root])
    assert refused_rule(pki.response(first, second)).rule == "bundle_consistent"


def test_two_trust_domains_each_own_bundle(ca: pki.TrustDomainCA, other: pki.TrustDomainCA) -> None:
    snap = validate_x509_response(pki.response(ca.svid(), other.svid()))
    assert snap.bundles == {TD: (ca.root.cert,), "other.org": (other.root.cert,)}
    assert snap.federated == frozenset()


@pytest.mark.parametrize(
    "federated",
    [
        {"Other.org": "root"},
        {"other.org:443": "root"},
        {"": "root"},
        {"other.org": b"\x30\x03abc"},
        {"other.org": b"garbage"},
        {"example.org": "root"},
        {"spiffe://example.org": "root"},
    ],
)
def test_federated_bundle(
    ca: pki.TrustDomainCA, other: pki.TrustDomainCA, federated: dict[str, object]
) -> None:
    # issue 12: a bad federated bundle is dropped (and reported), never refusing the message
    bundles = {k: [other.root] if v == "root" else v for k, v in federated.items()}
    resp = pki.response(ca.svid(), federated=bundles)  # type: ignore[arg-type]
    snapshot = validate_x509_response(resp)
    assert [key for key, _ in snapshot.dropped] == list(federated)
    assert snapshot.federated == frozenset()
    assert set(snapshot.bundles) == {"example.org"}


def test_a_federated_trust_domain_given_twice_keeps_the_first(
    ca: pki.TrustDomainCA, other: pki.TrustDomainCA
) -> None:
    resp = pki.response(ca.svid(), federated={"other.org": [other.root],
                                              "spiffe://other.org": [other.root]})
    snapshot = validate_x509_response(resp)
    assert snapshot.federated == {"other.org"}
    assert [key for key, _ in snapshot.dropped] == ["spiffe://other.org"]


def test_an_empty_federated_bundle_means_no_authorities(ca: pki.TrustDomainCA) -> None:
    snapshot = validate_x509_response(pki.response(ca.svid(), federated={"other.org": b""}))
    assert snapshot.federated == {"other.org"}
    assert snapshot.bundles["other.org"] == ()


# --- near expiry ---------------------------------------------------------------------------


def test_near_expiry_warns_but_accepts(
    ca: pki.TrustDomainCA, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(timezone.utc)
    leaf = ca.leaf(not_before=now - timedelta(minutes=55), not_after=now + timedelta(minutes=5))
    with caplog.at_level(logging.WARNING, logger="spiffe_helper.validate"):
        validate_x509_response(pki.response(ca.svid(leaf=leaf)), now=now)
    warnings = [r for r in caplog.records if r.name == "spiffe_helper.validate"]
    assert len(warnings) == 1
    assert "spiffe://example.org/workload" in warnings[0].getMessage()


def test_fresh_leaf_does_not_warn(ca: pki.TrustDomainCA, caplog: pytest.LogCaptureFixture) -> None:
    now = datetime.now(timezone.utc)
    leaf = ca.leaf(not_before=now - timedelta(minutes=49), not_after=now + timedelta(minutes=11))
    with caplog.at_level(logging.WARNING, logger="spiffe_helper.validate"):
        validate_x509_response(pki.response(ca.svid(leaf=leaf)), now=now)
    assert not [r for r in caplog.records if r.name == "spiffe_helper.validate"]


# --- hints ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hinted(ca: pki.TrustDomainCA) -> tuple[workload_pb2.X509SVIDResponse, list[str]]:
    paths = ["/default", "/internal", "/external", "/external2"]
    hints = ["", "internal", "external", "external"]
    msgs = [ca.svid(p, hint=h) for p, h in zip(paths, hints, strict=True)]
    return pki.response(*msgs), [ca.spiffe_id(p) for p in paths]


def test_select_default_with_empty_hint(
    hinted: tuple[workload_pb2.X509SVIDResponse, list[str]],
) -> None:
    resp, ids = hinted
    snap = validate_x509_response(resp)
    assert select_svid(snap, "").spiffe_id == ids[0]


def test_select_by_hint(hinted: tuple[workload_pb2.X509SVIDResponse, list[str]]) -> None:
    resp, ids = hinted
    snap = validate_x509_response(resp)
    assert select_svid(snap, "internal").spiffe_id == ids[1]


def test_duplicate_hint_first_wins(
    hinted: tuple[workload_pb2.X509SVIDResponse, list[str]],
) -> None:
    resp, ids = hinted
    snap = validate_x509_response(resp)
    assert len(snap.svids) == 4
    assert select_svid(snap, "external").spiffe_id == ids[2]


def test_hint_not_found(hinted: tuple[workload_pb2.X509SVIDResponse, list[str]]) -> None:
    resp, _ = hinted
    snap = validate_x509_response(resp)
    with pytest.raises(Refused) as info:
        select_svid(snap, "nope")
    assert info.value.rule == "hint_not_found"
    assert "external" in info.value.detail


def test_hint_not_found_without_any_hints(ca: pki.TrustDomainCA) -> None:
    snap = validate_x509_response(pki.response(ca.svid()))
    with pytest.raises(Refused) as info:
        select_svid(snap, "x")
    assert info.value.rule == "hint_not_found"
