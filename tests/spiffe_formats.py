"""Checks written from the standards, shared by the pure and the end-to-end tests.

`check_credential_folder` applies every MUST of the SPIFFE Filesystem Delivery draft
(latest revision) to a folder on disk; `bundle_map_certificates` reads a SPIFFE bundle map
the way gRPC's SPIFFE support does; `pkcs12_with_openssl` / `pkcs12_with_keytool` open a
keystore with the real tools.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from pki import is_leaf_key

CREDENTIAL_BUNDLE = "credential-bundle.private-key.x509.pem"
TRUST_BUNDLE_SUFFIX = ".spiffe-trust-bundle.x509.pem"

_BLOCK = re.compile(
    r"-----BEGIN (?P<type>[A-Z0-9 ]+)-----\n(?P<body>(?:[A-Za-z0-9+/=]{1,64}\n)+)"
    r"-----END (?P=type)-----\n"
)


def strict_pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """(type, DER) of each block; fails on inter-block data, PEM headers or bad base64."""
    text = data.decode("ascii")
    blocks: list[tuple[str, bytes]] = []
    position = 0
    while position < len(text):
        match = _BLOCK.match(text, position)
        assert match is not None, f"inter-block data or a PEM header at offset {position}"
        body = match.group("body")
        assert ":" not in body
        blocks.append((match.group("type"), base64.b64decode(body.replace("\n", ""),
                                                             validate=True)))
        position = match.end()
    return blocks


def check_credential_bundle(data: bytes, anchors: list[x509.Certificate]
                            ) -> tuple[PrivateKeyTypes, list[x509.Certificate]]:
    """Section 2.1: PRIVATE KEY (PKCS#8) first, then CERTIFICATE blocks leaf to root, the
    leaf issued to that key, no trust anchor, no other block types."""
    blocks = strict_pem_blocks(data)
    assert len(blocks) >= 2
    assert blocks[0][0] == "PRIVATE KEY"
    key = serialization.load_der_private_key(blocks[0][1], None)
    assert key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()) == blocks[0][1], "not PKCS#8"
    assert {kind for kind, _ in blocks[1:]} == {"CERTIFICATE"}
    chain = [x509.load_der_x509_certificate(der) for _, der in blocks[1:]]
    assert is_leaf_key(key, chain[0])
    for child, parent in itertools.pairwise(chain):
        child.verify_directly_issued_by(parent)  # leaf-to-root order
    anchor_ders = {a.public_bytes(serialization.Encoding.DER) for a in anchors}
    for cert in chain:
        assert cert.public_bytes(serialization.Encoding.DER) not in anchor_ders, "root included"
        assert cert.issuer != cert.subject, "self-signed certificate in the chain"
    assert any(chain[-1].issuer == a.subject for a in anchors), "chain does not reach an anchor"
    return key, chain


def check_trust_bundle(data: bytes) -> list[x509.Certificate]:
    """Section 2.2: one or more CERTIFICATE blocks, nothing else."""
    blocks = strict_pem_blocks(data)
    assert blocks, "empty trust bundle (a redaction) where one was expected"
    assert {kind for kind, _ in blocks} == {"CERTIFICATE"}
    return [x509.load_der_x509_certificate(der) for _, der in blocks]


def check_credential_folder(folder: Path, trust_domains: set[str], own: str,
                            ) -> dict[str, list[x509.Certificate]]:
    """The whole folder: exactly one non-empty trust bundle per expected trust domain (any
    other trust bundle file is a redaction: empty), and a valid credential bundle that chains
    to its own trust domain's bundle. Returns the trust bundles by trust domain."""
    bundles: dict[str, list[x509.Certificate]] = {}
    for path in folder.iterdir():
        if not path.name.endswith(TRUST_BUNDLE_SUFFIX):
            continue
        td = path.name[: -len(TRUST_BUNDLE_SUFFIX)]
        if td in trust_domains:
            bundles[td] = check_trust_bundle(path.read_bytes())
        else:
            assert path.read_bytes() == b"", f"{path.name}: departed trust domain not redacted"
    assert set(bundles) == trust_domains
    check_credential_bundle((folder / CREDENTIAL_BUNDLE).read_bytes(), bundles[own])
    return bundles


def bundle_map_certificates(data: bytes) -> dict[str, list[x509.Certificate]]:
    """The X.509 authorities per trust domain of a SPIFFE bundle map, checking each key's
    use, x5c and key parameters (RFC 7517 section 4.7: the x5c key matches the JWK)."""
    doc = json.loads(data)
    result: dict[str, list[x509.Certificate]] = {}
    for td, entry in doc["trust_domains"].items():
        assert isinstance(entry["spiffe_sequence"], int)
        certs = []
        for key in entry["keys"]:
            assert key["use"] == "x509-svid"
            assert len(key["x5c"]) == 1
            cert = x509.load_der_x509_certificate(base64.b64decode(key["x5c"][0], validate=True))
            numbers = cert.public_key().public_numbers()  # type: ignore[union-attr]
            if key["kty"] == "EC":
                size = (cert.public_key().curve.key_size + 7) // 8  # type: ignore[union-attr]
                x = base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
                assert len(x) == size
                assert int.from_bytes(x, "big") == numbers.x
            else:
                n = base64.urlsafe_b64decode(key["n"] + "=" * (-len(key["n"]) % 4))
                assert int.from_bytes(n, "big") == numbers.n  # type: ignore[union-attr]
            certs.append(cert)
        result[td] = certs
    return result


def pkcs12_with_openssl(path: Path, password: str) -> str:
    """`openssl pkcs12 -info` output (certificates and the decrypted key)."""
    result = subprocess.run(
        ["openssl", "pkcs12", "-in", str(path), "-passin", f"pass:{password}", "-nodes",
         "-info"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def keytool() -> str | None:
    return shutil.which("keytool")


def pkcs12_with_keytool(path: Path, password: str) -> str:
    """`keytool -list -v` output for the keystore."""
    tool = keytool()
    assert tool is not None
    result = subprocess.run(
        [tool, "-list", "-v", "-keystore", str(path), "-storetype", "PKCS12",
         "-storepass", password], capture_output=True, text=True, timeout=60, check=False,
        stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
