"""The dev agent's CA: SPIFFE X.509-SVIDs, roots, intermediates and CA rotation."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from devagent_util import (
    public_der,
)

from helper.devagent import DevCA
from helper.devagent.ca import CLOCK_SKEW

# ----- the CA -----


def test_leaf_is_a_spiffe_x509_svid() -> None:
    ca = DevCA("example.org")
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    svid = ca.mint_svid("spiffe://example.org/db", ttl=600, hint="db", now=now)
    leaf = svid.leaf
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [type(n) for n in sans] == [x509.UniformResourceIdentifier]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org/db"]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
    assert not usage.crl_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert 0 < leaf.serial_number < 2**128
    assert leaf.not_valid_before_utc == now - CLOCK_SKEW
    assert leaf.not_valid_after_utc == now + datetime.timedelta(seconds=600)
    assert public_der(svid.key) == public_der(leaf)
    assert svid.hint == "db"
    assert svid.chain_der() == leaf.public_bytes(serialization.Encoding.DER)
    leaf.verify_directly_issued_by(ca.root)


def test_root_is_a_spiffe_ca() -> None:
    ca = DevCA("example.org")
    root = ca.root
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    sans = root.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org"]
    root.verify_directly_issued_by(root)
    assert ca.bundle == (root,)


def test_dns_names_are_added_next_to_the_uri_san() -> None:
    svid = DevCA("example.org").mint_svid("spiffe://example.org/web", 60, dns_names=["localhost"])
    sans = svid.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org/web"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]


def test_negative_ttl_mints_an_expired_svid() -> None:
    svid = DevCA("example.org").mint_svid("spiffe://example.org/old", ttl=-3600)
    assert svid.leaf.not_valid_after_utc < datetime.datetime.now(datetime.timezone.utc)
    assert svid.leaf.not_valid_before_utc <= svid.leaf.not_valid_after_utc


def test_intermediate_ca_signs_the_leaf() -> None:
    ca = DevCA("example.org", intermediate=True)
    svid = ca.mint_svid("spiffe://example.org/w", 60)
    assert ca.intermediate is not None
    assert svid.chain == (svid.leaf, ca.intermediate)
    svid.leaf.verify_directly_issued_by(ca.intermediate)
    ca.intermediate.verify_directly_issued_by(ca.root)
    assert ca.bundle == (ca.root,)


def test_ca_rotation_keeps_only_the_previous_root() -> None:
    ca = DevCA("example.org")
    first = ca.root
    ca.rotate_ca()
    second = ca.root
    assert ca.bundle == (first, second)
    ca.rotate_ca()
    assert ca.bundle == (second, ca.root)
    ca.mint_svid("spiffe://example.org/w", 60).leaf.verify_directly_issued_by(ca.root)


def test_each_svid_has_its_own_key_and_serial() -> None:
    ca = DevCA("example.org")
    a, b = (ca.mint_svid("spiffe://example.org/w", 60) for _ in range(2))
    assert a.serial != b.serial
    assert a.key != b.key
