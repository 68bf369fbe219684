"""DER bytes -> certificates and private keys, for the X.509 rules (helper.identity.x509).

The agent sends certificates as concatenated DER and keys as PKCS#8 DER. Every failure is
`Refused("der_parse", detail)`; details name what was parsed and the byte offset, never
key bytes. Nothing here does I/O.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from helper.errors import Refused

_SEQUENCE = 0x30
_INTEGER = 0x02
_MAX_LENGTH_OCTETS = 4

Certificates = tuple[x509.Certificate, ...]


def _read_tlv(data: bytes, offset: int, what: str) -> tuple[int, int, int]:
    """Read one DER TLV at `offset`: (tag, content start, end). Raises Refused("der_parse")."""
    if len(data) - offset < 2:
        raise Refused("der_parse", f"{what}: truncated DER header at byte {offset}")
    tag = data[offset]
    first = data[offset + 1]
    if first < 0x80:
        start, length = offset + 2, first
    else:
        count = first & 0x7F
        if count == 0:
            raise Refused("der_parse", f"{what}: indefinite length at byte {offset} is not DER")
        if count > _MAX_LENGTH_OCTETS:
            raise Refused("der_parse", f"{what}: length of {count} octets at byte {offset}")
        start = offset + 2 + count
        if start > len(data):
            raise Refused("der_parse", f"{what}: truncated DER length at byte {offset}")
        raw = data[offset + 2 : start]
        length = int.from_bytes(raw, "big")
        if raw[0] == 0 or length < 0x80:
            raise Refused("der_parse", f"{what}: non-minimal DER length at byte {offset}")
    end = start + length
    if end > len(data):
        raise Refused(
            "der_parse",
            f"{what}: DER element at byte {offset} needs {end - offset} bytes, "
            f"{len(data) - offset} left",
        )
    return tag, start, end


def split_der_sequences(data: bytes, what: str) -> list[bytes]:
    """Split concatenated DER SEQUENCEs (certificates); anything else is refused."""
    parts: list[bytes] = []
    offset = 0
    while offset < len(data):
        tag, _, end = _read_tlv(data, offset, what)
        if tag != _SEQUENCE:
            raise Refused(
                "der_parse", f"{what}: byte {offset} starts tag 0x{tag:02x}, not a certificate"
            )
        parts.append(data[offset:end])
        offset = end
    return parts


def parse_certificates(data: bytes, what: str) -> Certificates:
    """Parse concatenated DER certificates; raises Refused("der_parse")."""
    certs: list[x509.Certificate] = []
    for index, der in enumerate(split_der_sequences(data, what)):
        try:
            cert = x509.load_der_x509_certificate(der)
            _parse_lazy_fields(cert)
        # the parser is fed untrusted bytes: besides ValueError it raises KeyError (a string
        # type it does not know in a name), and nothing it raises may stop the helper
        except Exception as exc:
            reason = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
            raise Refused("der_parse", f"{what}: certificate {index}: {reason}") from None
        certs.append(cert)
    return tuple(certs)


def _parse_lazy_fields(cert: x509.Certificate) -> None:
    """Parse what `cryptography` only parses when first read (names, validity, extensions),
    so a malformed field is refused here instead of raising ValueError in a later rule."""
    _ = cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc
    _ = cert.extensions


def is_pkcs8(der: bytes) -> bool:
    """True when `der` has the PKCS#8 PrivateKeyInfo shape: SEQUENCE { INTEGER, SEQUENCE ...}.

    PKCS#1 (RSA) and SEC1 (EC) keys have an INTEGER or OCTET STRING second instead.
    """
    try:
        tag, start, end = _read_tlv(der, 0, "x509_svid_key")
        if tag != _SEQUENCE or end != len(der):
            return False
        tag, _, after_version = _read_tlv(der, start, "x509_svid_key")
        if tag != _INTEGER:
            return False
        tag, _, _ = _read_tlv(der, after_version, "x509_svid_key")
    except Refused:
        return False
    return tag == _SEQUENCE


def parse_private_key(der: bytes, where: str) -> PrivateKeyTypes:
    """Parse a PKCS#8 DER private key; messages never include the key bytes."""
    if not der:
        raise Refused("der_parse", f"{where}: x509_svid_key is empty")
    if not is_pkcs8(der):
        raise Refused("der_parse", f"{where}: x509_svid_key is not a PKCS#8 DER private key")
    try:
        return serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise Refused(
            "der_parse", f"{where}: x509_svid_key cannot be parsed as a PKCS#8 private key"
        ) from None
