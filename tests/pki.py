"""Test PKI: mint CA, intermediate and leaf certificates (good and deliberately bad) and
build Workload API X509SVIDResponse messages from them.

EC P-256 by default (fast); Ed25519 and RSA (PKCS#1 v1.5 or PSS) on request.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from helper._proto import workload_pb2

SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
KeyKind = Literal["ec", "ed25519", "rsa"]

CA_USAGE = frozenset({"key_cert_sign", "crl_sign"})
LEAF_USAGE = frozenset({"digital_signature", "key_encipherment", "key_agreement"})
_USAGE_NAMES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_key(kind: KeyKind = "ec") -> SigningKey:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def spki_der(public_key: Any) -> bytes:
    """The DER SubjectPublicKeyInfo of a public key: what two equal keys share."""
    return public_key.public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def is_leaf_key(private_key: Any, leaf: x509.Certificate) -> bool:
    """`private_key` is the key of `leaf`."""
    return spki_der(private_key.public_key()) == spki_der(leaf.public_key())


def pkcs8_der(key: SigningKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: SigningKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def key_der(self) -> bytes:
        return pkcs8_der(self.key)


def key_usage(names: Collection[str]) -> x509.KeyUsage:
    flags = {name: name in names for name in _USAGE_NAMES}
    return x509.KeyUsage(encipher_only=False, decipher_only=False, **flags)


def issue(
    subject_cn: str,
    *,
    issuer: Issued | None = None,
    key: SigningKey | None = None,
    ca: bool | None = False,
    usage: Collection[str] | None = LEAF_USAGE,
    uris: Sequence[str] = (),
    dns: Sequence[str] = (),
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    pss: bool = False,
) -> Issued:
    """One certificate. `issuer` None = self-signed; `ca` None = no basic constraints;
    `usage` None = no key usage extension."""
    key = key if key is not None else new_key()
    now = utcnow()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    signer_key = issuer.key if issuer is not None else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before if not_before is not None else now - timedelta(hours=1))
        .not_valid_after(not_after if not_after is not None else now + timedelta(hours=1))
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=None), critical=True
        )
    if usage is not None:
        builder = builder.add_extension(key_usage(usage), critical=True)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in dns]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if isinstance(signer_key, ed25519.Ed25519PrivateKey):
        return Issued(builder.sign(signer_key, None), key)
    if isinstance(signer_key, rsa.RSAPrivateKey) and pss:
        pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return Issued(builder.sign(signer_key, hashes.SHA256(), rsa_padding=pad), key)
    return Issued(builder.sign(signer_key, hashes.SHA256()), key)


def make_root(
    trust_domain: str = "example.org",
    *,
    cn: str | None = None,
    key: SigningKey | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Issued:
    now = utcnow()
    return issue(
        cn or f"{trust_domain} root",
        key=key,
        ca=True,
        usage=CA_USAGE,
        uris=[f"spiffe://{trust_domain}"],
        not_before=not_before or now - timedelta(days=1),
        not_after=not_after or now + timedelta(days=1),
    )


def make_intermediate(
    issuer: Issued,
    *,
    cn: str = "intermediate",
    key: SigningKey | None = None,
    ca: bool | None = True,
    usage: Collection[str] | None = CA_USAGE,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    pss: bool = False,
) -> Issued:
    now = utcnow()
    return issue(
        cn,
        issuer=issuer,
        key=key,
        ca=ca,
        usage=usage,
        not_before=not_before or now - timedelta(hours=12),
        not_after=not_after or now + timedelta(hours=12),
        pss=pss,
    )


def make_leaf(
    issuer: Issued,
    spiffe_id: str,
    *,
    key: SigningKey | None = None,
    ca: bool | None = False,
    usage: Collection[str] | None = LEAF_USAGE,
    uris: Sequence[str] | None = None,
    dns: Sequence[str] = (),
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    pss: bool = False,
) -> Issued:
    return issue(
        "workload",
        issuer=issuer,
        key=key,
        ca=ca,
        usage=usage,
        uris=[spiffe_id] if uris is None else uris,
        dns=dns,
        not_before=not_before,
        not_after=not_after,
        pss=pss,
    )


def svid_message(
    spiffe_id: str,
    chain: Sequence[Issued],
    bundle: Sequence[Issued],
    *,
    hint: str = "",
    key_der: bytes | None = None,
) -> workload_pb2.X509SVID:
    """An X509SVID message: the chain's DER concatenated, the leaf's PKCS#8 key."""
    return workload_pb2.X509SVID(
        spiffe_id=spiffe_id,
        x509_svid=b"".join(c.der for c in chain),
        x509_svid_key=chain[0].key_der if key_der is None else key_der,
        bundle=b"".join(c.der for c in bundle),
        hint=hint,
    )


def response(
    *svids: workload_pb2.X509SVID,
    federated: Mapping[str, Sequence[Issued] | bytes] | None = None,
) -> workload_pb2.X509SVIDResponse:
    bundles = {
        name: value if isinstance(value, bytes) else b"".join(c.der for c in value)
        for name, value in (federated or {}).items()
    }
    return workload_pb2.X509SVIDResponse(svids=list(svids), federated_bundles=bundles)


@dataclass(frozen=True)
class TrustDomainCA:
    """A trust domain's root and one intermediate, and shortcuts to mint its SVIDs."""

    name: str
    root: Issued
    intermediate: Issued

    @classmethod
    def create(cls, name: str = "example.org", *, root_cn: str | None = None) -> TrustDomainCA:
        root = make_root(name, cn=root_cn)
        return cls(name, root, make_intermediate(root))

    def spiffe_id(self, path: str = "/workload") -> str:
        return f"spiffe://{self.name}{path}"

    def leaf(self, path: str = "/workload", **options: Any) -> Issued:
        return make_leaf(self.intermediate, self.spiffe_id(path), **options)

    def svid(
        self, path: str = "/workload", *, hint: str = "", leaf: Issued | None = None
    ) -> workload_pb2.X509SVID:
        """A good SVID message: leaf + intermediate, bundle = root."""
        leaf = leaf if leaf is not None else self.leaf(path)
        return svid_message(self.spiffe_id(path), [leaf, self.intermediate], [self.root], hint=hint)


def with_foreign_key(message: workload_pb2.X509SVIDResponse) -> workload_pb2.X509SVIDResponse:
    """A copy of `message` whose default SVID carries a key that is not the leaf's."""
    bad = workload_pb2.X509SVIDResponse()
    bad.CopyFrom(message)
    bad.svids[0].x509_svid_key = pkcs8_der(new_key("ec"))
    return bad
