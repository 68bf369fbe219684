"""JWT-SVID validation (helper/identity/jwt.py): every rule, with the rule named on
refusal. Pure."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from helper.devagent.jws import sign_jws
from helper.errors import Refused
from helper.identity.jwks import JWTBundle, jwk, parse_jwt_bundles
from helper.identity.jwt import (
    JWTSVID,
    select_jwt_svid,
    unverified_expiry,
    validate_jwt_svid,
)

TD = "example.org"
SUB = f"spiffe://{TD}/web"
AUD = "spiffe://example.org/db"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


@dataclass(frozen=True)
class Keys:
    p256: ec.EllipticCurvePrivateKey
    p384: ec.EllipticCurvePrivateKey
    p521: ec.EllipticCurvePrivateKey
    rsa: rsa.RSAPrivateKey
    other: ec.EllipticCurvePrivateKey  # not in any bundle

    def by_kid(self) -> dict[str, Any]:
        return {"p256": self.p256, "p384": self.p384, "p521": self.p521, "rsa": self.rsa}


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1()),
                ec.generate_private_key(ec.SECP521R1()),
                rsa.generate_private_key(public_exponent=65537, key_size=2048),
                ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def bundles(keys: Keys) -> dict[str, JWTBundle]:
    jwks = {"keys": [jwk(k.public_key(), kid=kid, use="jwt-svid")
                     for kid, k in keys.by_kid().items()]}
    return parse_jwt_bundles({f"spiffe://{TD}": json.dumps(jwks).encode()})


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": SUB, "aud": [AUD], "exp": int((NOW + timedelta(minutes=5))
                                                               .timestamp()),
                            "iat": int(NOW.timestamp())}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def token(key: Any, alg: str = "ES256", kid: str | None = "p256",
          body: dict[str, Any] | None = None, **header: Any) -> str:
    head: dict[str, Any] = {"alg": alg, "typ": "JWT", **header}
    if kid is not None:
        head["kid"] = kid
    return sign_jws(head, claims() if body is None else body, key)


# --- accepted -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("alg", "kid"), [
    ("ES256", "p256"), ("ES384", "p384"), ("ES512", "p521"),
    ("RS256", "rsa"), ("RS384", "rsa"), ("RS512", "rsa"),
    ("PS256", "rsa"), ("PS384", "rsa"), ("PS512", "rsa"),
])
def test_every_allowed_algorithm_verifies(keys: Keys, bundles: dict[str, JWTBundle], alg: str,
                                          kid: str) -> None:
    svid = validate_jwt_svid(token(keys.by_kid()[kid], alg, kid), AUD, bundles, now=NOW)
    assert svid.spiffe_id == SUB
    assert svid.trust_domain == TD
    assert svid.audience == (AUD,)
    assert svid.expiry == NOW + timedelta(minutes=5)
    assert svid.key_id == kid


def test_audience_may_be_a_string_and_extra_audiences_are_kept(
        keys: Keys, bundles: dict[str, JWTBundle]) -> None:
    assert validate_jwt_svid(token(keys.p256, body=claims(aud=AUD)), AUD, bundles,
                             now=NOW).audience == (AUD,)
    svid = validate_jwt_svid(token(keys.p256, body=claims(aud=["x", AUD])), AUD, bundles, now=NOW)
    assert svid.audience == ("x", AUD)


def test_typ_may_be_absent_or_jose(keys: Keys, bundles: dict[str, JWTBundle]) -> None:
    for typ in (None, "JOSE"):
        head = {"alg": "ES256", "kid": "p256"} | ({"typ": typ} if typ else {})
        validate_jwt_svid(sign_jws(head, claims(), keys.p256), AUD, bundles, now=NOW)


def test_token_is_not_in_the_repr(keys: Keys, bundles: dict[str, JWTBundle]) -> None:
    text = token(keys.p256)
    svid = validate_jwt_svid(text, AUD, bundles, now=NOW)
    assert text.split(".")[2] not in repr(svid)


# --- refused, with the rule named ---------------------------------------------------------------


def _flip_signature(text: str) -> str:
    head, body, sig = text.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[5] ^= 0x01
    return f"{head}.{body}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


def _der_signature(keys: Keys) -> str:
    from cryptography.hazmat.primitives import hashes

    text = token(keys.p256)
    head, body, _ = text.split(".")
    der = keys.p256.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    return f"{head}.{body}.{base64.urlsafe_b64encode(der).rstrip(b'=').decode()}"


def _segment(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def _rsa_public_pem(keys: Keys) -> bytes:
    return keys.rsa.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


HOSTILE: dict[str, tuple[str, Callable[[Keys], str]]] = {
    "bad signature": ("jwt_signature", lambda k: _flip_signature(token(k.p256))),
    "signed by a key not in the bundle": ("jwt_signature", lambda k: token(k.other)),
    "alg none": ("jwt_alg", lambda k: token(None, "none")),
    "alg none, empty signature, upper case": ("jwt_alg", lambda k: token(None, "None")),
    "HS256 with the RSA public key as secret": (
        "jwt_alg", lambda k: token(_rsa_public_pem(k), "HS256", "rsa")),
    "HS512": ("jwt_alg", lambda k: token(b"secret", "HS512")),
    "EdDSA": ("jwt_alg", lambda k: token(None, "EdDSA").rsplit(".", 1)[0] + ".AAAA"),
    "wrong audience": ("jwt_aud", lambda k: token(k.p256, body=claims(aud=["someone-else"]))),
    "no audience": ("jwt_aud", lambda k: token(k.p256, body=claims(aud=None))),
    "audience not strings": ("jwt_aud", lambda k: token(k.p256, body=claims(aud=[AUD, 1]))),
    "expired": ("jwt_exp", lambda k: token(k.p256, body=claims(
        exp=int((NOW - timedelta(seconds=1)).timestamp())))),
    "no exp": ("jwt_exp", lambda k: token(k.p256, body=claims(exp=None))),
    "exp a string": ("jwt_exp", lambda k: token(k.p256, body=claims(exp="9999999999"))),
    "exp a boolean": ("jwt_exp", lambda k: token(k.p256, body=claims(exp=True))),
    "not valid yet": ("jwt_nbf", lambda k: token(k.p256, body=claims(
        nbf=int((NOW + timedelta(minutes=2)).timestamp())))),
    "missing kid": ("jwt_kid", lambda k: token(k.p256, kid=None)),
    "empty kid": ("jwt_kid", lambda k: token(k.p256, kid="")),
    "kid unknown": ("jwt_kid_unknown", lambda k: token(k.p256, kid="nope")),
    "sub not a SPIFFE ID": ("jwt_sub", lambda k: token(k.p256, body=claims(sub="https://x"))),
    "sub missing": ("jwt_sub", lambda k: token(k.p256, body=claims(sub=None))),
    "sub of a trust domain without a bundle": (
        "jwt_bundle", lambda k: token(k.p256, body=claims(sub="spiffe://other.org/web"))),
    "typ not JWT": ("jwt_typ", lambda k: token(k.p256, typ="at+jwt")),
    "crit header": ("jwt_crit", lambda k: token(k.p256, crit=["exp"])),
    "ES256 naming an RSA key": ("jwt_signature", lambda k: token(k.p256, "ES256", "rsa")),
    "RS256 naming an EC key": ("jwt_signature", lambda k: token(k.rsa, "RS256", "p256")),
    "ES384 naming a P-256 key": ("jwt_signature", lambda k: token(k.p256, "ES384", "p256")),
    "RS256 signature labelled PS256": ("jwt_signature", lambda k: (
        token(k.rsa, "PS256", "rsa").rsplit(".", 1)[0] + "."
        + token(k.rsa, "RS256", "rsa").rsplit(".", 1)[1])),
    "ECDSA signature in DER, not r||s": ("jwt_signature", _der_signature),
    "two segments": ("jwt_format", lambda k: ".".join(token(k.p256).split(".")[:2])),
    "four segments": ("jwt_format", lambda k: token(k.p256) + ".x"),
    "padded base64": ("jwt_format", lambda k: token(k.p256).replace(".", "=.", 1)),
    "header not JSON": ("jwt_format", lambda k: _segment(b"{") + "." + token(k.p256)
                        .split(".", 1)[1]),
    "header a list": ("jwt_format", lambda k: _segment(b"[]") + "." + token(k.p256)
                      .split(".", 1)[1]),
    "duplicate claim": ("jwt_format", lambda k: token(k.p256).split(".")[0] + "." + _segment(
        b'{"sub":"spiffe://example.org/a","sub":"spiffe://example.org/b"}') + ".AA"),
    "empty": ("jwt_format", lambda k: ""),
    "huge": ("jwt_format", lambda k: "a" * 70000),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tokens_are_refused_with_the_rule_named(
        keys: Keys, bundles: dict[str, JWTBundle], case: str) -> None:
    rule, make = HOSTILE[case]
    text = make(keys)
    with pytest.raises(Refused) as refused:
        validate_jwt_svid(text, AUD, bundles, now=NOW)
    assert refused.value.rule == rule, refused.value
    signature = text.rsplit(".", 1)[-1]
    if len(signature) > 8:
        assert signature not in str(refused.value)


def test_exp_is_checked_against_the_given_clock(keys: Keys, bundles: dict[str, JWTBundle]) -> None:
    text = token(keys.p256)
    later = NOW + timedelta(minutes=5)
    with pytest.raises(Refused) as refused:
        validate_jwt_svid(text, AUD, bundles, now=later)
    assert refused.value.rule == "jwt_exp"


# --- selection and peeking ----------------------------------------------------------------------


def _svid(hint: str) -> JWTSVID:
    return JWTSVID("t", SUB, TD, (AUD,), NOW, "k", hint)


def test_select_by_hint_like_the_go_helper() -> None:
    svids = [_svid(""), _svid("db"), _svid("db")]
    assert select_jwt_svid(svids, "") is svids[0]
    assert select_jwt_svid(svids, "db") is svids[1]
    with pytest.raises(Refused) as refused:
        select_jwt_svid(svids, "web")
    assert refused.value.rule == "hint_not_found"
    with pytest.raises(Refused):
        select_jwt_svid([], "")


def test_unverified_expiry_reads_exp_only(keys: Keys) -> None:
    assert unverified_expiry(token(keys.other) + "\n") == NOW + timedelta(minutes=5)
    assert unverified_expiry("garbage") is None
    assert unverified_expiry(token(keys.p256, body=claims(exp=None))) is None


# --- anything at all is refused cleanly -----------------------------------------------------------

SEGMENT = st.one_of(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.",
             max_size=40),
    st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "sub", "aud", "exp", "nbf"]),
                    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                              st.text(max_size=30),
                              st.lists(st.text(max_size=10), max_size=3)),
                    max_size=6).map(lambda d: _segment(json.dumps(d).encode())),
)


@settings(deadline=None, max_examples=300)
@given(st.lists(SEGMENT, min_size=1, max_size=4).map(".".join))
def test_arbitrary_tokens_are_refused_never_crash(text: str) -> None:
    bundles = parse_jwt_bundles({f"spiffe://{TD}": b'{"keys": []}'})
    with pytest.raises(Refused):
        validate_jwt_svid(text, AUD, bundles, now=NOW)
    unverified_expiry(text)  # never raises


@settings(deadline=None, max_examples=300)
@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12)),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["keys", "kty", "kid", "use", "crv", "x",
                                                       "y", "n", "e"]), inner, max_size=5),
                    max_leaves=12))
def test_arbitrary_jwks_documents_are_parsed_or_refused(value: Any) -> None:
    from helper.identity.jwks import parse_jwt_bundle

    with contextlib.suppress(Refused):
        parse_jwt_bundle(TD, json.dumps(value).encode())
