"""X509SVIDResponse -> X509Snapshot: every rule an X.509 response must pass before a write.

Each rule is one function named ``check_<rule>`` that raises `Refused(rule, detail)`;
the bytes are parsed by helper.identity.der (rule der_parse).
Details name the SVID (by index and SPIFFE ID) and the certificate, never key bytes.
The only side effect is a `logging` warning when a leaf is close to expiry.

Rules, in the order they are applied:
no_svids, spiffe_id, der_parse, leaf_one_uri_san, leaf_uri_matches_spiffe_id, leaf_not_ca,
leaf_key_usage, intermediate_is_ca, key_matches_leaf, bundle_present, leaf_not_yet_valid,
leaf_expired, intermediate_not_yet_valid, intermediate_expired, chain_verifies,
bundle_consistent. `select_svid` adds hint_not_found.

A federated bundle never refuses a message: an empty one is a trust domain without X.509
authorities, a malformed one is left out of the snapshot and named in `X509Snapshot.dropped`
(the own SVIDs and their bundles are the only parts whose failure refuses a message).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import MappingProxyType

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)

from helper._proto import workload_pb2
from helper.errors import NotYetValid, Refused
from helper.identity.der import Certificates, parse_certificates, parse_private_key
from helper.identity.snapshot import X509SVID, X509Snapshot
from helper.identity.spiffeid import (
    SpiffeID,
    offered_hints,
    parse_spiffe_id,
    parse_trust_domain,
    shown,
)

log = logging.getLogger("spiffe_helper.validate")

# How far in the future a notBefore may lie: the host's clock may trail the agent's (SPIRE
# backdates notBefore by only 10 s). The config key clock_skew sets it, for JWT too.
CLOCK_SKEW = timedelta(seconds=60)
NEAR_EXPIRY_FRACTION = 6  # warn when less than 1/6 of the leaf's lifetime is left


# --- the rules ------------------------------------------------------------------------------


def check_no_svids(resp: workload_pb2.X509SVIDResponse) -> None:
    """The response carries at least one SVID."""
    if not resp.svids:
        raise Refused("no_svids", "the X.509 response holds no SVID")


def check_spiffe_id(text: str, where: str) -> SpiffeID:
    """The `spiffe_id` field is a valid SPIFFE ID."""
    try:
        return parse_spiffe_id(text)
    except Refused as exc:
        raise Refused(
            "spiffe_id", f"{where}: spiffe_id {shown(text)} is invalid ({exc.rule}: {exc.detail})"
        ) from None


def check_leaf_one_uri_san(leaf: x509.Certificate, where: str) -> str:
    """The leaf has exactly one URI SAN; returns it."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if len(uris) != 1:
        raise Refused("leaf_one_uri_san", f"{where}: leaf has {len(uris)} URI SANs, needs one")
    return uris[0]


def check_leaf_uri_matches_spiffe_id(uri: str, spiffe_id: SpiffeID, where: str) -> None:
    """The leaf's URI SAN is exactly the SVID's `spiffe_id`."""
    if uri != str(spiffe_id):
        raise Refused(
            "leaf_uri_matches_spiffe_id",
            f"{where}: leaf URI SAN {shown(uri)} differs from spiffe_id {shown(str(spiffe_id))}",
        )


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def check_leaf_not_ca(leaf: x509.Certificate, where: str) -> None:
    """The leaf is not a CA: basic constraints, when present, say CA=false."""
    constraints = _basic_constraints(leaf)
    if constraints is not None and constraints.ca:
        raise Refused("leaf_not_ca", f"{where}: leaf has basic constraints CA=true")


def check_leaf_key_usage(leaf: x509.Certificate, where: str) -> None:
    """Key usage is present with digitalSignature and without keyCertSign or cRLSign."""
    usage = _key_usage(leaf)
    if usage is None:
        raise Refused("leaf_key_usage", f"{where}: leaf has no key usage extension")
    if not usage.digital_signature:
        raise Refused("leaf_key_usage", f"{where}: leaf key usage lacks digitalSignature")
    if usage.key_cert_sign or usage.crl_sign:
        raise Refused("leaf_key_usage", f"{where}: leaf key usage has keyCertSign or cRLSign")


def check_intermediate_is_ca(chain: Certificates, where: str) -> None:
    """Every intermediate has basic constraints CA=true and key usage keyCertSign."""
    for index, cert in enumerate(chain[1:], start=1):
        constraints = _basic_constraints(cert)
        if constraints is None or not constraints.ca:
            raise Refused("intermediate_is_ca", f"{where}: chain certificate {index} is not a CA")
        usage = _key_usage(cert)
        if usage is None or not usage.key_cert_sign:
            raise Refused(
                "intermediate_is_ca", f"{where}: chain certificate {index} lacks keyCertSign"
            )


def _spki(key: PublicKeyTypes | CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_key_matches_leaf(key: PrivateKeyTypes, leaf: x509.Certificate, where: str) -> None:
    """The private key's public half is the leaf's public key (compared as SPKI DER)."""
    try:
        matches = _spki(key.public_key()) == _spki(leaf.public_key())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        matches = False
    if not matches:
        raise Refused("key_matches_leaf", f"{where}: private key does not match the leaf")


def check_bundle_present(bundle: Certificates, trust_domain: str, where: str) -> None:
    """The SVID's own trust domain has a non-empty bundle."""
    if not bundle:
        raise Refused("bundle_present", f"{where}: no bundle for trust domain {trust_domain!r}")


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def check_leaf_validity(
    leaf: x509.Certificate, now: datetime, where: str, skew: timedelta = CLOCK_SKEW
) -> None:
    """`now` is inside the leaf's validity window (rules leaf_not_yet_valid, leaf_expired);
    notBefore may be up to `skew` in the future (a clock that trails the agent's)."""
    if now + skew < leaf.not_valid_before_utc:
        raise NotYetValid(
            "leaf_not_yet_valid",
            f"{where}: leaf is valid from {leaf.not_valid_before_utc.isoformat()}",
            leaf.not_valid_before_utc - skew,
        )
    if now > leaf.not_valid_after_utc:
        raise Refused(
            "leaf_expired", f"{where}: leaf expired at {leaf.not_valid_after_utc.isoformat()}"
        )


def check_intermediate_validity(
    chain: Certificates, now: datetime, where: str, skew: timedelta = CLOCK_SKEW
) -> None:
    """`now` is inside every intermediate's validity window (notBefore with `skew`)."""
    for index, cert in enumerate(chain[1:], start=1):
        if now + skew < cert.not_valid_before_utc:
            raise NotYetValid(
                "intermediate_not_yet_valid",
                f"{where}: chain certificate {index} is valid from "
                f"{cert.not_valid_before_utc.isoformat()}",
                cert.not_valid_before_utc - skew,
            )
        if now > cert.not_valid_after_utc:
            raise Refused(
                "intermediate_expired",
                f"{where}: chain certificate {index} expired at "
                f"{cert.not_valid_after_utc.isoformat()}",
            )


def is_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `cert` names `issuer`'s subject as issuer and `issuer`'s key signed it.

    Handles RSA (PKCS#1 v1.5 and PSS), ECDSA, Ed25519 and Ed448 signatures.
    """
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _within(cert: x509.Certificate, now: datetime, skew: timedelta = CLOCK_SKEW) -> bool:
    return cert.not_valid_before_utc <= now + skew and now <= cert.not_valid_after_utc


def check_chain_verifies(
    chain: Certificates, authorities: Certificates, trust_domain: str, now: datetime, where: str,
    skew: timedelta = CLOCK_SKEW,
) -> None:
    """Each chain certificate is signed by the next; the last by a valid bundle authority."""
    for index, (cert, issuer) in enumerate(itertools.pairwise(chain)):
        if not is_issued_by(cert, issuer):
            raise Refused(
                "chain_verifies",
                f"{where}: chain certificate {index} is not issued by chain certificate "
                f"{index + 1}",
            )
    last = chain[-1]
    issuers = [authority for authority in authorities if is_issued_by(last, authority)]
    if not issuers:
        raise Refused(
            "chain_verifies",
            f"{where}: chain does not lead to an authority of trust domain {trust_domain!r} "
            f"(issuer {last.issuer.rfc4514_string()!r})",
        )
    if not any(_within(authority, now, skew) for authority in issuers):
        raise Refused(
            "chain_verifies",
            f"{where}: the authorities of trust domain {trust_domain!r} that issued the chain "
            "are expired or not yet valid",
        )


def check_bundle_consistent(
    seen: Mapping[str, Certificates], trust_domain: str, bundle: Certificates, where: str
) -> None:
    """SVIDs of one trust domain carry the same bundle (else which one to write is unclear)."""
    earlier = seen.get(trust_domain)
    if earlier is not None and earlier != bundle:
        raise Refused(
            "bundle_consistent",
            f"{where}: bundle for trust domain {trust_domain!r} differs from an earlier SVID's",
        )


class BundleDropped(ValueError):
    """A federated bundle that cannot be used: left out of the snapshot, never refusing it."""


def check_federated_bundle(
    key: str, data: bytes, own: Mapping[str, Certificates], seen: Mapping[str, Certificates]
) -> tuple[str, Certificates]:
    """A federated bundle: a valid trust domain, not an own one, given once, DER
    certificates. Empty bytes are a trust domain with no X.509 authorities (SPIRE sends
    that; the SPIFFE Filesystem Delivery draft writes it as an empty file): accepted.
    Raises BundleDropped with a one-line reason."""
    try:
        trust_domain = parse_trust_domain(key)
    except Refused as exc:
        raise BundleDropped(
            f"federated bundle key {shown(key)} is not a trust domain ({exc.rule}: {exc.detail})"
        ) from None
    if trust_domain in own:
        raise BundleDropped(f"federated bundle {shown(key)} is for the SVIDs' own trust domain")
    if trust_domain in seen:
        raise BundleDropped(f"federated trust domain {trust_domain!r} given twice")
    try:
        certs = parse_certificates(data, f"federated bundle {trust_domain!r}")
    except Refused as exc:
        raise BundleDropped(exc.detail) from None
    return trust_domain, certs


def warn_if_near_expiry(leaf: x509.Certificate, now: datetime, where: str) -> None:
    """Log a warning (never refuse) when less than 1/6 of the leaf's lifetime is left."""
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    left = leaf.not_valid_after_utc - now
    if lifetime > timedelta(0) and left * NEAR_EXPIRY_FRACTION < lifetime:
        log.warning(
            "%s: leaf expires at %s, less than 1/%d of its lifetime left",
            where,
            leaf.not_valid_after_utc.isoformat(),
            NEAR_EXPIRY_FRACTION,
        )


# --- assembly -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Checked:
    svid: X509SVID
    bundle: Certificates


def validate_svid(
    msg: workload_pb2.X509SVID, index: int, now: datetime, skew: timedelta = CLOCK_SKEW
) -> _Checked:
    """Apply every per-SVID rule to one X509SVID message."""
    where = f"svid {index}"
    spiffe_id = check_spiffe_id(msg.spiffe_id, where)
    where = f"svid {index} ({spiffe_id})"
    chain = parse_certificates(msg.x509_svid, f"{where} x509_svid")
    if not chain:
        raise Refused("der_parse", f"{where}: x509_svid is empty")
    key = parse_private_key(msg.x509_svid_key, where)
    bundle = parse_certificates(msg.bundle, f"{where} bundle")
    leaf = chain[0]
    check_leaf_uri_matches_spiffe_id(check_leaf_one_uri_san(leaf, where), spiffe_id, where)
    check_leaf_not_ca(leaf, where)
    check_leaf_key_usage(leaf, where)
    check_intermediate_is_ca(chain, where)
    check_key_matches_leaf(key, leaf, where)
    check_bundle_present(bundle, spiffe_id.trust_domain, where)
    check_leaf_validity(leaf, now, where, skew)
    check_intermediate_validity(chain, now, where, skew)
    check_chain_verifies(chain, bundle, spiffe_id.trust_domain, now, where, skew)
    warn_if_near_expiry(leaf, now, where)
    svid = X509SVID(
        spiffe_id=str(spiffe_id),
        trust_domain=spiffe_id.trust_domain,
        chain=chain,
        private_key=key,
        private_key_der=bytes(msg.x509_svid_key),
        hint=msg.hint,
    )
    return _Checked(svid=svid, bundle=bundle)


def validate_x509_response(
    resp: workload_pb2.X509SVIDResponse, *, now: datetime | None = None,
    skew: timedelta = CLOCK_SKEW,
) -> X509Snapshot:
    """Validate a whole X.509 response into a snapshot; raises Refused(rule, detail).

    A certificate's notBefore may lie up to `skew` after `now` (the clock skew allowance).
    """
    moment = _as_utc(now) if now is not None else datetime.now(timezone.utc)
    check_no_svids(resp)
    svids: list[X509SVID] = []
    own: dict[str, Certificates] = {}
    for index, msg in enumerate(resp.svids):
        checked = validate_svid(msg, index, moment, skew)
        td = checked.svid.trust_domain
        check_bundle_consistent(own, td, checked.bundle, f"svid {index} ({checked.svid.spiffe_id})")
        own.setdefault(td, checked.bundle)
        svids.append(checked.svid)
    federated: dict[str, Certificates] = {}
    dropped: list[tuple[str, str]] = []
    for key in sorted(resp.federated_bundles):
        try:
            td, certs = check_federated_bundle(key, resp.federated_bundles[key], own, federated)
        except BundleDropped as exc:
            dropped.append((key, str(exc)))
            continue
        federated[td] = certs
    return X509Snapshot(
        svids=tuple(svids),
        bundles=MappingProxyType({**own, **federated}),
        federated=frozenset(federated),
        dropped=tuple(dropped),
    )


def valid_from(
    resp: workload_pb2.X509SVIDResponse, refusal: NotYetValid, skew: timedelta, *,
    attempts: int = 8,
) -> datetime | None:
    """When a response refused only for being not yet valid passes every rule; None when
    it would still be refused then for another reason."""
    moment = refusal.valid_from
    for _ in range(attempts):
        assert isinstance(moment, datetime)
        try:
            validate_x509_response(resp, now=moment, skew=skew)
        except NotYetValid as later:  # another certificate of it starts later still
            moment = later.valid_from
            continue
        except Refused:
            return None
        return moment
    return None


def select_svid(snapshot: X509Snapshot, hint: str) -> X509SVID:
    """The SVID to write: the default for hint "", else the first carrying `hint`."""
    if not hint:
        return snapshot.default
    for svid in snapshot.svids:
        if svid.hint == hint:
            return svid
    raise Refused("hint_not_found", f"no SVID carries hint {shown(hint)} "
                  f"(hints offered: {offered_hints(svid.hint for svid in snapshot.svids)})")

