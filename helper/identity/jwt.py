"""JWT-SVID validation: one small check per rule, each raising `Refused(rule, detail)`. Pure.

Rules (SPIFFE JWT-SVID specification; shared/README section 2), in the order applied:

- ``jwt_format``: a compact JWS (three base64url segments; header and claims JSON objects
  without duplicate members; at most 64 KiB);
- ``jwt_alg``: ``alg`` is RS256/384/512, ES256/384/512 or PS256/384/512, never ``none``
  and never an HMAC;
- ``jwt_kid``: ``kid`` is present;
- ``jwt_typ``: ``typ``, when present, is ``JWT`` or ``JOSE``;
- ``jwt_crit``: no ``crit`` header (no extension is understood here);
- ``jwt_sub``: ``sub`` is a SPIFFE ID;
- ``jwt_aud``: ``aud`` (a string or a list of strings) contains the requested audience;
- ``jwt_exp``: ``exp`` is present, a number, and in the future;
- ``jwt_nbf``: ``nbf``, when present, is not in the future (beyond `CLOCK_SKEW`);
- ``jwt_bundle``: there is a JWT bundle for the trust domain of ``sub``;
- ``jwt_kid_unknown``: that bundle holds a key with the ``kid``;
- ``jwt_signature``: the key fits the algorithm and the signature verifies.

Details name claims and key IDs, never the token or signature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from helper.errors import Refused
from helper.identity.jwks import (
    EC_CURVES,
    JWTBundle,
    JWTPublicKey,
    b64url_decode,
    parse_json_object,
)
from helper.identity.spiffeid import offered_hints, parse_spiffe_id, shown

MAX_TOKEN_CHARS = 64 * 1024
CLOCK_SKEW = timedelta(seconds=60)

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512,
}
ALGORITHMS = frozenset(f"{family}{bits}" for family in ("RS", "PS", "ES") for bits in _HASHES)
# ES algorithms fix the curve: ES256 signs with P-256, ES384 with P-384, ES512 with P-521.
_ES_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_TYPES = frozenset({"JWT", "JOSE"})


@dataclass(frozen=True)
class JWTSVID:
    """A validated JWT-SVID. `token` is the compact JWS exactly as received."""

    token: str = field(repr=False)
    spiffe_id: str
    trust_domain: str
    audience: tuple[str, ...]
    expiry: datetime
    key_id: str
    hint: str = ""
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class _Parsed:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


# --- the rules ----------------------------------------------------------------------------


def check_format(token: str) -> _Parsed:
    if not isinstance(token, str) or not token:
        raise Refused("jwt_format", "empty token")
    if len(token) > MAX_TOKEN_CHARS:
        raise Refused("jwt_format", f"token of {len(token)} characters is too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise Refused("jwt_format", f"a compact JWS has 3 segments, this token has {len(parts)}")
    header_b64, claims_b64, signature_b64 = parts
    header = parse_json_object(b64url_decode(header_b64, "header", "jwt_format"), "header",
                               "jwt_format")
    claims = parse_json_object(b64url_decode(claims_b64, "claims", "jwt_format"), "claims",
                               "jwt_format")
    signature = b64url_decode(signature_b64, "signature", "jwt_format")
    return _Parsed(header, claims, f"{header_b64}.{claims_b64}".encode("ascii"), signature)


def check_alg(header: Mapping[str, Any]) -> str:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        allowed = ", ".join(sorted(ALGORITHMS))
        raise Refused("jwt_alg", f"algorithm {shown(str(alg))} is not allowed (only {allowed})")
    return str(alg)


def check_kid(header: Mapping[str, Any]) -> str:
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Refused("jwt_kid", "header has no key ID ('kid')")
    return kid


def check_typ(header: Mapping[str, Any]) -> None:
    typ = header.get("typ", "JWT")
    if not isinstance(typ, str) or typ not in _TYPES:
        raise Refused("jwt_typ", f"type {shown(str(typ))} is not JWT or JOSE")


def check_crit(header: Mapping[str, Any]) -> None:
    if "crit" in header:
        raise Refused("jwt_crit", "header names critical extensions ('crit'), none supported")


def check_sub(claims: Mapping[str, Any]) -> tuple[str, str]:
    """(SPIFFE ID, trust domain) of ``sub``."""
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise Refused("jwt_sub", "claim 'sub' is missing or not a string")
    try:
        spiffe_id = parse_spiffe_id(sub)
    except Refused as exc:
        raise Refused("jwt_sub", f"claim 'sub' is not a SPIFFE ID: {exc}") from None
    return str(spiffe_id), spiffe_id.trust_domain


def check_aud(claims: Mapping[str, Any], audience: str) -> tuple[str, ...]:
    aud = claims.get("aud")
    values: list[Any] = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not values or not all(isinstance(v, str) for v in values):
        raise Refused("jwt_aud", "claim 'aud' is missing or not a string or list of strings")
    if audience not in values:
        raise Refused("jwt_aud", f"audience {shown(audience)} is not in claim 'aud' "
                                 f"({', '.join(shown(v) for v in values[:5])})")
    return tuple(values)


def _numeric_date(claims: Mapping[str, Any], name: str, rule: str) -> datetime | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Refused(rule, f"claim {name!r} is not a number")
    try:
        return datetime.fromtimestamp(value, timezone.utc)
    except (OverflowError, OSError, ValueError):
        if value > 0:
            return datetime.max.replace(tzinfo=timezone.utc)
        return datetime.min.replace(tzinfo=timezone.utc)


def check_exp(claims: Mapping[str, Any], now: datetime) -> datetime:
    expiry = _numeric_date(claims, "exp", "jwt_exp")
    if expiry is None:
        raise Refused("jwt_exp", "claim 'exp' is missing")
    if expiry <= now:
        raise Refused("jwt_exp", f"token expired at {expiry.isoformat()}")
    return expiry


def check_nbf(claims: Mapping[str, Any], now: datetime, skew: timedelta = CLOCK_SKEW) -> None:
    not_before = _numeric_date(claims, "nbf", "jwt_nbf")
    if not_before is not None and not_before > now + skew:
        raise Refused("jwt_nbf", f"token is not valid before {not_before.isoformat()}")


def check_bundle(bundles: Mapping[str, JWTBundle], trust_domain: str) -> JWTBundle:
    bundle = bundles.get(trust_domain)
    if bundle is None:
        raise Refused("jwt_bundle", f"no JWT bundle for trust domain {trust_domain}")
    return bundle


def check_kid_known(bundle: JWTBundle, kid: str) -> JWTPublicKey:
    key = bundle.keys.get(kid)
    if key is None:
        raise Refused("jwt_kid_unknown",
                      f"no key with ID {shown(kid)} in the JWT bundle of {bundle.trust_domain}")
    return key


def check_signature(key: JWTPublicKey, alg: str, signing_input: bytes, signature: bytes) -> None:
    digest = _HASHES[alg[2:]]()
    try:
        if alg.startswith("ES"):
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise Refused("jwt_signature", f"{alg} needs an EC key, the bundle has RSA")
            curve, size = EC_CURVES[_ES_CURVES[alg]]
            if key.curve.name != curve.name:
                raise Refused("jwt_signature", f"{alg} needs curve {_ES_CURVES[alg]}, "
                                               f"the key is on {key.curve.name}")
            if len(signature) != 2 * size:
                raise Refused("jwt_signature", f"{alg} signature must be {2 * size} bytes, "
                                               f"got {len(signature)}")
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(utils.encode_dss_signature(r, s), signing_input, ec.ECDSA(digest))
            return
        if not isinstance(key, rsa.RSAPublicKey):
            raise Refused("jwt_signature", f"{alg} needs an RSA key, the bundle has EC")
        if alg.startswith("PS"):
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            key.verify(signature, signing_input, pss, digest)
        else:
            key.verify(signature, signing_input, padding.PKCS1v15(), digest)
    except InvalidSignature:
        raise Refused("jwt_signature", f"{alg} signature does not verify with key") from None


# --- putting them together -----------------------------------------------------------------


def validate_jwt_svid(
    token: str,
    audience: str,
    bundles: Mapping[str, JWTBundle],
    *,
    now: datetime | None = None,
    hint: str = "",
    skew: timedelta = CLOCK_SKEW,
) -> JWTSVID:
    """Every rule above, in order; the validated JWT-SVID."""
    moment = now if now is not None else datetime.now(timezone.utc)
    parsed = check_format(token)
    alg = check_alg(parsed.header)
    kid = check_kid(parsed.header)
    check_typ(parsed.header)
    check_crit(parsed.header)
    spiffe_id, trust_domain = check_sub(parsed.claims)
    audiences = check_aud(parsed.claims, audience)
    expiry = check_exp(parsed.claims, moment)
    check_nbf(parsed.claims, moment, skew)
    key = check_kid_known(check_bundle(bundles, trust_domain), kid)
    check_signature(key, alg, parsed.signing_input, parsed.signature)
    return JWTSVID(token=token, spiffe_id=spiffe_id, trust_domain=trust_domain,
                   audience=audiences, expiry=expiry, key_id=kid, hint=hint,
                   claims=parsed.claims)


def unverified_expiry(token: str) -> datetime | None:
    """The ``exp`` of a token without checking anything else; None when there is none.

    Only to decide whether a token left on disk by an earlier run has expired.
    """
    try:
        parsed = check_format(token.strip())
        return _numeric_date(parsed.claims, "exp", "jwt_exp")
    except Refused:
        return None


def select_jwt_svid(svids: Sequence[JWTSVID], hint: str) -> JWTSVID:
    """The first SVID for hint "", else the first carrying `hint` (as the Go helper)."""
    if not svids:
        raise Refused("no_svids", "the response holds no JWT-SVID")
    if not hint:
        return svids[0]
    for svid in svids:
        if svid.hint == hint:
            return svid
    raise Refused("hint_not_found", f"no JWT-SVID carries hint {shown(hint)} "
                  f"(hints offered: {offered_hints(svid.hint for svid in svids)})")
