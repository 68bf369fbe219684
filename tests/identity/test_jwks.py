"""JWKS parsing and rendering (helper/identity/jwks.py) and the Go-format JWT bundle file. Pure."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from helper.errors import Refused
from helper.identity.jwks import JWTBundle, jwk, jwks_json, parse_jwt_bundle, parse_jwt_bundles
from helper.outputs.formats import jwt_bundle_file_json

EC_KEY = ec.generate_private_key(ec.SECP256R1()).public_key()
P521_KEY = ec.generate_private_key(ec.SECP521R1()).public_key()
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()


def doc(*keys: dict[str, Any] | Any) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def ec_jwk(**changes: Any) -> dict[str, Any]:
    base = jwk(EC_KEY, kid="ec", use="jwt-svid")
    assert base is not None
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_ec_and_rsa_keys_round_trip() -> None:
    bundle = parse_jwt_bundle("example.org", doc(
        jwk(EC_KEY, kid="ec", use="jwt-svid"), jwk(RSA_KEY, kid="rsa", use="jwt-svid"),
        jwk(P521_KEY, kid="p521", use="jwt-svid")))
    assert set(bundle.keys) == {"ec", "rsa", "p521"}
    assert bundle.keys["ec"].public_numbers() == EC_KEY.public_numbers()
    assert bundle.keys["rsa"].public_numbers() == RSA_KEY.public_numbers()
    assert bundle.keys["p521"].public_numbers() == P521_KEY.public_numbers()


def test_use_may_be_absent_as_spire_sends_it() -> None:
    assert set(parse_jwt_bundle("td", doc(ec_jwk(use=None))).keys) == {"ec"}


def test_other_uses_and_unknown_key_types_are_ignored_never_used() -> None:
    okp = jwk(ed25519.Ed25519PrivateKey.generate().public_key(), kid="ed", use="jwt-svid")
    oct_key = {"kty": "oct", "kid": "hmac", "use": "jwt-svid", "k": "c2VjcmV0"}
    bundle = parse_jwt_bundle("td", doc(ec_jwk(use="x509-svid", kid=None), okp, oct_key, ec_jwk()))
    assert set(bundle.keys) == {"ec"}
    assert len(bundle.skipped) == 3


@pytest.mark.parametrize(("data", "rule"), [
    (b"{", "jwks_json"),
    (b"[]", "jwks_json"),
    (b'{"keys": {}}', "jwks_json"),
    (b'{"keys": [1]}', "jwks_json"),
    (b'{"keys": [], "keys": []}', "jwks_json"),
    (doc(ec_jwk(kid=None)), "jwks_kid"),
    (doc(ec_jwk(kid="")), "jwks_kid"),
    (doc(ec_jwk(), ec_jwk()), "jwks_kid"),
    (doc(ec_jwk(crv="P-192")), "jwks_key"),
    (doc(ec_jwk(x="AAAA")), "jwks_key"),
    (doc(ec_jwk(x=ec_jwk()["y"], y=ec_jwk()["x"])), "jwks_key"),  # point not on the curve
    (doc(ec_jwk(y=None)), "jwks_key"),
    (doc(ec_jwk(x="not base64url!")), "jwks_key"),
    (doc(jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(),
             kid="small")), "jwks_key"),
])
def test_bad_bundles_are_refused_with_the_rule_named(data: bytes, rule: str) -> None:
    with pytest.raises(Refused) as refused:
        parse_jwt_bundle("example.org", data)
    assert refused.value.rule == rule


def test_trust_domain_keys_are_checked() -> None:
    assert sorted(parse_jwt_bundles({"spiffe://example.org": doc(), "other.org": doc()})) == [
        "example.org", "other.org"]
    for bad in ({"spiffe://Example.org": doc()}, {"spiffe://a.org": doc(), "a.org": doc()}):
        with pytest.raises(Refused) as refused:
            parse_jwt_bundles(bad)
        assert refused.value.rule == "jwks_trust_domain"


def test_jwks_json_is_go_spiffe_marshal_shape() -> None:
    bundle = parse_jwt_bundle("td", doc(jwk(RSA_KEY, kid="b", use="jwt-svid"), ec_jwk(kid="a")))
    text = jwks_json(bundle)
    assert b" " not in text
    keys = json.loads(text)["keys"]
    assert [list(k) for k in keys] == [["kty", "kid", "crv", "x", "y"], ["kty", "kid", "n", "e"]]
    assert keys[1]["e"] == "AQAB"
    assert parse_jwt_bundle("td", text).keys["b"].public_numbers() == RSA_KEY.public_numbers()


def test_jwt_bundle_file_is_the_go_helper_format() -> None:
    bundles = {"z.org": JWTBundle("z.org", {"k": EC_KEY}), "a.org": JWTBundle("a.org", {})}
    text = jwt_bundle_file_json(bundles)
    assert text.startswith(b'{"a.org":"')
    assert not text.endswith(b"\n")
    decoded = {td: base64.b64decode(value, validate=True) for td, value in json.loads(text).items()}
    assert list(decoded) == ["a.org", "z.org"]
    assert json.loads(decoded["a.org"]) == {"keys": []}
    assert parse_jwt_bundle("z.org", decoded["z.org"]).keys["k"].public_numbers() == \
        EC_KEY.public_numbers()
