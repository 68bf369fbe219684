"""Compact JWS signing for the dev agent (and for tests that forge hostile tokens). Pure.

`sign_jws` signs whatever header it is given, including ``alg: none`` and HMAC: the dev
agent only ever mints ES256, but tests need tokens the helper must refuse.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from helper.identity.jwks import b64url_encode

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512,
}
_EC_SIZES = {"secp256r1": 32, "secp384r1": 48, "secp521r1": 66}

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | bytes


def _segment(value: Mapping[str, Any]) -> str:
    return b64url_encode(json.dumps(value, separators=(",", ":")).encode())


def sign_jws(header: Mapping[str, Any], claims: Mapping[str, Any], key: SigningKey | None) -> str:
    """``header.claims.signature`` with the algorithm named by ``header["alg"]`` (an empty
    signature for ``none`` or any algorithm not listed above)."""
    alg = str(header.get("alg", ""))
    signing_input = f"{_segment(header)}.{_segment(claims)}".encode("ascii")
    return f"{signing_input.decode('ascii')}.{b64url_encode(_sign(alg, signing_input, key))}"


def _sign(alg: str, data: bytes, key: SigningKey | None) -> bytes:
    if alg[:2] not in ("HS", "ES", "RS", "PS") or alg[2:] not in _HASHES:
        return b""  # "none" and algorithms nobody should sign with: no signature
    digest = _HASHES[alg[2:]]()
    if alg.startswith("HS"):
        assert isinstance(key, bytes)
        return hmac.new(key, data, getattr(hashlib, digest.name)).digest()
    if alg.startswith("ES"):
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
        size = _EC_SIZES[key.curve.name]
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    assert isinstance(key, rsa.RSAPrivateKey)
    if alg.startswith("PS"):
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        return key.sign(data, pss, digest)
    return key.sign(data, padding.PKCS1v15(), digest)
