"""A development certificate authority that mints SPIFFE X.509-SVIDs and JWT-SVIDs.

Pure crypto, no I/O. Every key is EC P-256, so minting takes about a millisecond.
"""

from __future__ import annotations

import datetime
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from helper.devagent.jws import sign_jws
from helper.identity.jwks import jwk

JWT_SVID_USE = "jwt-svid"
CLOCK_SKEW = datetime.timedelta(seconds=30)
"""Certificates start this long before "now", so a verifier whose clock lags accepts them."""

DEFAULT_CA_TTL = 365 * 24 * 3600.0


@dataclass(frozen=True)
class MintedSVID:
    """One freshly minted X.509-SVID: `chain` is the leaf, then the intermediate if any."""

    spiffe_id: str
    chain: tuple[x509.Certificate, ...]
    key: bytes = field(repr=False)  # PKCS#8 DER
    bundle: tuple[x509.Certificate, ...] = ()  # the issuing trust domain's authorities
    hint: str = ""

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def serial(self) -> int:
        return self.leaf.serial_number

    @property
    def expires(self) -> datetime.datetime:
        return self.leaf.not_valid_after_utc

    def chain_der(self) -> bytes:
        """The chain as the Workload API sends it: DER certificates concatenated."""
        return _concat_der(self.chain)

    def bundle_der(self) -> bytes:
        """The trust domain's authorities, DER certificates concatenated."""
        return _concat_der(self.bundle)


@dataclass(frozen=True)
class _Authority:
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    cert: x509.Certificate


@dataclass(frozen=True)
class JWTAuthority:
    """A JWT signing key (EC P-256, ES256) and its key ID."""

    kid: str
    key: ec.EllipticCurvePrivateKey = field(repr=False)


class DevCA:
    """A self-signed root for one trust domain, optionally with an intermediate CA, and a
    JWT signing key.

    `rotate_ca()` replaces the signing root (and intermediate); the previous root stays in
    `bundle` so that SVIDs issued before the rotation keep verifying during the overlap.
    `rotate_jwt_key()` does the same for the JWT signing key and the JWKS.
    """

    def __init__(
        self,
        trust_domain: str,
        *,
        intermediate: bool = False,
        ca_ttl: float = DEFAULT_CA_TTL,
    ) -> None:
        self.trust_domain = trust_domain
        self.with_intermediate = intermediate
        self.ca_ttl = ca_ttl
        self.generation = 0
        self._previous_root: x509.Certificate | None = None
        self._root, self._intermediate = self._new_authorities()
        self._jwt_authorities = [_new_jwt_authority()]

    @property
    def id(self) -> str:
        """The trust domain's SPIFFE ID, ``spiffe://<trust domain>``."""
        return f"spiffe://{self.trust_domain}"

    @property
    def root(self) -> x509.Certificate:
        """The root that signs new SVIDs (directly or through the intermediate)."""
        return self._root.cert

    @property
    def intermediate(self) -> x509.Certificate | None:
        return self._intermediate.cert if self._intermediate else None

    @property
    def bundle(self) -> tuple[x509.Certificate, ...]:
        """The trust domain's authorities: the previous root (after a rotation), then the
        current one."""
        if self._previous_root is None:
            return (self._root.cert,)
        return (self._previous_root, self._root.cert)

    def bundle_der(self) -> bytes:
        return _concat_der(self.bundle)

    def rotate_ca(self) -> None:
        """Replace the signing root (and intermediate); keep the old root in the bundle."""
        self._previous_root = self._root.cert
        self._root, self._intermediate = self._new_authorities()

    @property
    def jwt_authority(self) -> JWTAuthority:
        """The key that signs new JWT-SVIDs."""
        return self._jwt_authorities[-1]

    def rotate_jwt_key(self) -> None:
        """A new JWT signing key; the previous one stays in the JWKS for the overlap."""
        self._jwt_authorities = [self._jwt_authorities[-1], _new_jwt_authority()]

    def jwks(self) -> bytes:
        """The JWT bundle: a JWKS with every JWT authority, ``use`` jwt-svid."""
        keys = [jwk(a.key.public_key(), kid=a.kid, use=JWT_SVID_USE)
                for a in self._jwt_authorities]
        return json.dumps({"keys": keys}).encode()

    def mint_jwt_svid(
        self,
        spiffe_id: str,
        audience: Sequence[str],
        ttl: float,
        *,
        now: datetime.datetime | None = None,
    ) -> str:
        """A JWT-SVID (ES256, with kid and typ JWT) for `spiffe_id` and `audience`, expiring
        `ttl` seconds from `now` (a negative ttl gives an expired token, for tests)."""
        moment = (now or _utcnow()).timestamp()
        authority = self.jwt_authority
        header = {"alg": "ES256", "kid": authority.kid, "typ": "JWT"}
        claims = {"sub": spiffe_id, "aud": list(audience), "exp": int(moment + ttl),
                  "iat": int(moment)}
        return sign_jws(header, claims, authority.key)

    def mint_svid(
        self,
        spiffe_id: str,
        ttl: float,
        hint: str = "",
        *,
        dns_names: Sequence[str] = (),
        now: datetime.datetime | None = None,
    ) -> MintedSVID:
        """Mint an X.509-SVID for `spiffe_id`, valid for `ttl` seconds from `now`.

        The leaf has exactly one URI SAN (the SPIFFE ID) plus the given DNS names. A
        negative `ttl` gives an already expired certificate (useful for tests).
        """
        now = now or _utcnow()
        not_after = now + datetime.timedelta(seconds=ttl)
        not_before = min(now - CLOCK_SKEW, not_after)
        signer = self._intermediate or self._root
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
        names += [x509.DNSName(name) for name in dns_names]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(("C", "US"), ("O", "SPIRE")))
            .issuer_name(signer.cert.subject)
            .public_key(key.public_key())
            .serial_number(_random_serial())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(leaf=True), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(_authority_key_id(signer.cert), critical=False)
        )
        leaf = builder.sign(signer.key, hashes.SHA256())
        chain = (leaf, self._intermediate.cert) if self._intermediate else (leaf,)
        return MintedSVID(
            spiffe_id=spiffe_id,
            chain=chain,
            key=_pkcs8_der(key),
            bundle=self.bundle,
            hint=hint,
        )

    def _new_authorities(self) -> tuple[_Authority, _Authority | None]:
        self.generation += 1
        root = self._new_ca(f"root {self.generation}", issuer=None)
        if not self.with_intermediate:
            return root, None
        return root, self._new_ca(f"intermediate {self.generation}", issuer=root)

    def _new_ca(self, label: str, issuer: _Authority | None) -> _Authority:
        now = _utcnow()
        key = ec.generate_private_key(ec.SECP256R1())
        # a CN holds at most 64 characters; a trust domain name may be up to 255 bytes
        cn = f"{self.trust_domain[:40]} dev {label}"[:64]
        subject = _name(("C", "US"), ("O", "SPIFFE"), ("CN", cn))
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.cert.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(_random_serial())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + datetime.timedelta(seconds=self.ca_ttl))
            .add_extension(
                x509.BasicConstraints(ca=True, path_length=None if issuer is None else 0),
                critical=True,
            )
            .add_extension(_key_usage(leaf=False), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(self.id)]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        if issuer is not None:
            builder = builder.add_extension(_authority_key_id(issuer.cert), critical=False)
        cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
        return _Authority(key=key, cert=cert)


def _new_jwt_authority() -> JWTAuthority:
    return JWTAuthority(kid=secrets.token_urlsafe(16), key=ec.generate_private_key(ec.SECP256R1()))


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _random_serial() -> int:
    """A random positive 128-bit serial number."""
    return secrets.randbits(128) or 1


def _name(*parts: tuple[str, str]) -> x509.Name:
    oids = {"C": NameOID.COUNTRY_NAME, "O": NameOID.ORGANIZATION_NAME, "CN": NameOID.COMMON_NAME}
    return x509.Name([x509.NameAttribute(oids[kind], value) for kind, value in parts])


def _key_usage(*, leaf: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=leaf,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not leaf,
        crl_sign=not leaf,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _pkcs8_der(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _concat_der(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.DER) for cert in certs)
