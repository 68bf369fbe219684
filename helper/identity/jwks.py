"""JWKS documents: JWT bundles in, public keys out; public keys back to JWKs. Pure: no I/O.

A JWT bundle (FetchJWTBundles) is a JWKS document per trust domain. Rules, each raising
`Refused(rule, detail)`:

- ``jwks_json``: the document is a JSON object with a ``keys`` array of objects;
- ``jwks_trust_domain``: the map key is a trust domain (``spiffe://example.org`` or
  ``example.org``);
- ``jwks_kid``: every JWT authority has a non-empty ``kid``, unique in its bundle;
- ``jwks_key``: the key parameters make a valid public key (RSA of 2048 bits or more, EC
  P-256/P-384/P-521 with the point on the curve).

``use`` must be ``jwt-svid`` or absent: SPIRE's agent sends its JWT bundles as standard
JWKS, without ``use`` (bundleutil.StandardJWKS). A key with another use (``x509-svid``)
or a key type we do not know is not a JWT authority and is skipped, as the SPIFFE bundle
specification requires ("Clients encountering unknown key types or uses MUST ignore the
corresponding JWK element"). None of that makes a symmetric key usable: JWT validation
accepts asymmetric algorithms only.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from helper.errors import Refused
from helper.identity.spiffeid import parse_trust_domain, shown

JWT_SVID_USE = "jwt-svid"
X509_SVID_USE = "x509-svid"
MIN_RSA_BITS = 2048
MAX_JWKS_BYTES = 1 << 20

JWTPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# JWK curve name -> (cryptography curve, coordinate size in bytes)
EC_CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-384": (ec.SECP384R1(), 48),
    "P-521": (ec.SECP521R1(), 66),
}
_CURVE_NAMES = {type(curve).__name__: name for name, (curve, _) in EC_CURVES.items()}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True)
class JWTBundle:
    """The JWT authorities of one trust domain, by key ID."""

    trust_domain: str
    keys: Mapping[str, JWTPublicKey] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()  # why keys were ignored, for the log


JWTBundleSet = Mapping[str, JWTBundle]  # by trust domain name


# --- base64url ---------------------------------------------------------------------------


def b64url_decode(text: str, what: str, rule: str) -> bytes:
    """Strict unpadded base64url (RFC 7515 section 2); raises Refused(rule)."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise Refused(rule, f"{what} is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise Refused(rule, f"{what} is not unpadded base64url") from None


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint_bytes(value: int, size: int = 0) -> bytes:
    """Big-endian bytes of `value`: exactly `size` bytes, or minimal when size is 0."""
    length = size or max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(length, "big")


# --- JWK -> public key -------------------------------------------------------------------


def _param(jwk: Mapping[str, Any], name: str, where: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise Refused("jwks_key", f"{where}: parameter {name!r} missing or not a string")
    return b64url_decode(value, f"{where}: parameter {name!r}", "jwks_key")


def ec_public_key(jwk: Mapping[str, Any], where: str) -> ec.EllipticCurvePublicKey:
    crv = jwk.get("crv")
    if not isinstance(crv, str) or crv not in EC_CURVES:
        raise Refused("jwks_key", f"{where}: unsupported EC curve {crv!r}")
    curve, size = EC_CURVES[crv]
    x, y = _param(jwk, "x", where), _param(jwk, "y", where)
    if len(x) != size or len(y) != size:
        raise Refused("jwks_key", f"{where}: {crv} coordinates must be {size} bytes")
    try:
        return ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
        ).public_key()
    except ValueError:
        raise Refused("jwks_key", f"{where}: the point is not on curve {crv}") from None


def rsa_public_key(jwk: Mapping[str, Any], where: str) -> rsa.RSAPublicKey:
    n = int.from_bytes(_param(jwk, "n", where), "big")
    e = int.from_bytes(_param(jwk, "e", where), "big")
    if n.bit_length() < MIN_RSA_BITS:
        raise Refused("jwks_key", f"{where}: RSA modulus of {n.bit_length()} bits "
                                  f"(at least {MIN_RSA_BITS} required)")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise Refused("jwks_key", f"{where}: invalid RSA key: {exc}") from None


# --- JWKS -> JWT bundle ------------------------------------------------------------------


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {shown(key)}")
        result[key] = value
    return result


def parse_json_object(data: bytes | str, what: str, rule: str) -> dict[str, Any]:
    """A JSON object with no duplicate member names; raises Refused(rule)."""
    try:
        value = json.loads(data, object_pairs_hook=_reject_duplicates)
    except (ValueError, RecursionError) as exc:
        raise Refused(rule, f"{what} is not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(value, dict):
        raise Refused(rule, f"{what} is not a JSON object")
    return value


def check_jwks_shape(doc: Mapping[str, Any], what: str) -> list[Any]:
    keys = doc.get("keys")
    if not isinstance(keys, list):
        raise Refused("jwks_json", f"{what}: 'keys' must be an array")
    return keys


def check_jwks_kid(jwk: Mapping[str, Any], seen: Mapping[str, object], where: str) -> str:
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Refused("jwks_kid", f"{where}: JWT authority without a key ID ('kid')")
    if kid in seen:
        raise Refused("jwks_kid", f"{where}: key ID {shown(kid)} appears twice")
    return kid


def parse_jwt_bundle(trust_domain: str, data: bytes) -> JWTBundle:
    """One trust domain's JWKS document -> its JWT authorities."""
    what = f"JWT bundle of {trust_domain}"
    if len(data) > MAX_JWKS_BYTES:
        raise Refused("jwks_json", f"{what}: {len(data)} bytes is too large")
    keys = check_jwks_shape(parse_json_object(data, what, "jwks_json"), what)
    authorities: dict[str, JWTPublicKey] = {}
    skipped: list[str] = []
    for index, jwk in enumerate(keys):
        where = f"{what}, key {index}"
        if not isinstance(jwk, dict):
            raise Refused("jwks_json", f"{where} is not a JSON object")
        use = jwk.get("use", JWT_SVID_USE)
        kty = jwk.get("kty")
        if use != JWT_SVID_USE:
            skipped.append(f"{where}: use {use!r} is not {JWT_SVID_USE!r}")
            continue
        if kty not in ("EC", "RSA"):
            skipped.append(f"{where}: key type {kty!r} is not EC or RSA")
            continue
        kid = check_jwks_kid(jwk, authorities, where)
        authorities[kid] = ec_public_key(jwk, where) if kty == "EC" else rsa_public_key(jwk, where)
    return JWTBundle(trust_domain=trust_domain, keys=authorities, skipped=tuple(skipped))


def check_jwks_trust_domain(name: str) -> str:
    try:
        return parse_trust_domain(name)
    except Refused as exc:
        raise Refused("jwks_trust_domain", f"bundle key {shown(name)}: {exc.detail}") from None


def parse_jwt_bundles(bundles: Mapping[str, bytes]) -> dict[str, JWTBundle]:
    """A JWTBundlesResponse's map (trust domain ID -> JWKS) -> bundles by trust domain name."""
    result: dict[str, JWTBundle] = {}
    for name in sorted(bundles):
        td = check_jwks_trust_domain(name)
        if td in result:
            raise Refused("jwks_trust_domain", f"trust domain {td} appears twice")
        result[td] = parse_jwt_bundle(td, bundles[name])
    return result


# --- public key -> JWK -------------------------------------------------------------------


def jwk_key_params(key: PublicKeyTypes) -> dict[str, str] | None:
    """``kty`` and the key parameters of a public key, in go-jose's member order; None for
    key types a JWK cannot carry."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        name = _CURVE_NAMES.get(type(key.curve).__name__)
        if name is None:
            return None
        size = EC_CURVES[name][1]
        numbers = key.public_numbers()
        return {"kty": "EC", "crv": name, "x": b64url_encode(_uint_bytes(numbers.x, size)),
                "y": b64url_encode(_uint_bytes(numbers.y, size))}
    if isinstance(key, rsa.RSAPublicKey):
        rsa_numbers = key.public_numbers()
        return {"kty": "RSA", "n": b64url_encode(_uint_bytes(rsa_numbers.n)),
                "e": b64url_encode(_uint_bytes(rsa_numbers.e))}
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        crv = "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "Ed448"
        raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"kty": "OKP", "crv": crv, "x": b64url_encode(raw)}
    return None


def jwk(key: PublicKeyTypes, *, kid: str = "", use: str = "",
        x5c: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """A JWK for `key` with members in go-jose's order (use, kty, kid, crv, x, y, n, e, x5c)."""
    params = jwk_key_params(key)
    if params is None:
        return None
    doc: dict[str, Any] = {}
    if use:
        doc["use"] = use
    doc["kty"] = params.pop("kty")
    if kid:
        doc["kid"] = kid
    doc.update(params)
    if x5c:
        doc["x5c"] = list(x5c)
    return doc


def jwks_json(bundle: JWTBundle) -> bytes:
    """The JWKS of a JWT bundle as go-spiffe's jwtbundle.Marshal writes it: compact JSON,
    no ``use`` member; keys sorted by ``kid`` (Go's order is a map walk, i.e. random)."""
    keys = [jwk(bundle.keys[kid], kid=kid) for kid in sorted(bundle.keys)]
    return json.dumps({"keys": keys}, separators=(",", ":")).encode()
