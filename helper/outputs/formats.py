"""The output formats beyond the Go layout, rendered from validated data. Pure: no I/O.

- combined PEM (`svid_combined_file_name`): the private key, the leaf, the intermediates,
  in one file (HAProxy; any reader that must never pair a new key with an old cert);
- PKCS#12 (`pkcs12_file_name`): key, leaf and intermediates for Java, alias ``spiffe``;
- SPIFFE Filesystem Delivery credential folder (`credential_folder`);
- SPIFFE bundle map (`spiffe_bundle_map_file_name`), the JSON gRPC's SPIFFE mTLS reads;
- the JWT bundle file (`jwt_bundle_file_name`) in the Go helper's format;
- the Go layout (SVID, key, bundle) for one extra identity of `x509_svids`.

State that must survive between messages (the PKCS#12 bytes, which embed random salts,
and the bundle map's sequence numbers) lives in small objects here; callers feed them
what they read from disk at start, so nothing in this module touches a file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    KeySerializationEncryption,
    NoEncryption,
    PublicFormat,
)

from helper.identity.snapshot import X509SVID, X509Snapshot
from helper.outputs.pem import OutputFile, bundle_certificates, certificates_pem, pem_block

if TYPE_CHECKING:
    from helper.identity.jwks import JWTBundleSet

# helper.identity.jwks and PKCS#12 are imported where used: an X.509 run writing PEM files
# loads neither

PKCS12_ALIAS = b"spiffe"
NAME_MAX = 255
_PKCS12_KEY_TYPES = (rsa.RSAPrivateKey, dsa.DSAPrivateKey, ec.EllipticCurvePrivateKey,
                     ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)
# SPIFFE Filesystem Delivery is a draft (spiffe/spiffe PR #376). Its revisions name the
# files credential-bundle.pem / <td>.trust-bundle.pem, then <td>.spiffe-trust-bundle.pem,
# and in the latest (the author's, which SPIRE's CSI "spiffefs" writes) the names below,
# with "MUST NOT contain the trust anchor" and "SHOULD redact by writing an empty file,
# rather than by removing the file" (a reader may take a missing file for a remount and
# keep trusting). We follow that latest revision throughout.
CREDENTIAL_BUNDLE_NAME = "credential-bundle.private-key.x509.pem"
TRUST_BUNDLE_SUFFIX = ".spiffe-trust-bundle.x509.pem"


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def _fingerprint(*parts: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


# --- one more identity in the Go layout -------------------------------------------------------


@dataclass(frozen=True)
class GoLayoutOptions:
    add_intermediates_to_bundle: bool
    include_federated_domains: bool
    omit_expired: bool
    cert_file_mode: int
    key_file_mode: int


def render_go_layout(
    snapshot: X509Snapshot,
    svid: X509SVID,
    paths: tuple[Path, Path, Path],
    opts: GoLayoutOptions,
    now: datetime,
) -> list[OutputFile]:
    """SVID, key and bundle files for `svid`, exactly as `render.render_x509` lays them out."""
    chain = list(svid.chain)
    moved: tuple[x509.Certificate, ...] = ()
    if opts.add_intermediates_to_bundle:
        chain, moved = chain[:1], svid.intermediates
    bundle = bundle_certificates(snapshot, svid.trust_domain, moved,
                                 include_federated=opts.include_federated_domains)
    cert_path, key_path, bundle_path = paths
    omit = opts.omit_expired
    return [
        OutputFile(cert_path, certificates_pem(chain, omit_expired=omit, now=now),
                   opts.cert_file_mode, secret=False),
        OutputFile(key_path, pem_block("PRIVATE KEY", svid.private_key_der),
                   opts.key_file_mode, secret=True),
        OutputFile(bundle_path, certificates_pem(bundle, omit_expired=omit, now=now),
                   opts.cert_file_mode, secret=False),
    ]


# --- combined PEM ------------------------------------------------------------------------------


def combined_pem(svid: X509SVID) -> bytes:
    """PRIVATE KEY block, then the leaf and intermediates as CERTIFICATE blocks."""
    return pem_block("PRIVATE KEY", svid.private_key_der) + b"".join(
        pem_block("CERTIFICATE", _der(cert)) for cert in svid.chain
    )


# --- PKCS#12 -------------------------------------------------------------------------------------


def pkcs12_bytes(svid: X509SVID, password: bytes | None) -> bytes:
    """A PKCS#12 keystore: the key with the leaf (alias ``spiffe``) and the intermediates.

    With a password the bags are encrypted with cryptography's best available scheme
    (PBES2, AES-256-CBC, PBKDF2-SHA256; OpenSSL 3 and Java 8u301+ read it) and MACed; without
    one nothing is encrypted.
    """
    encryption: KeySerializationEncryption = (
        BestAvailableEncryption(password) if password else NoEncryption()
    )
    key = svid.private_key
    if not isinstance(key, _PKCS12_KEY_TYPES):  # pragma: no cover - validated earlier
        raise TypeError("private key type cannot go into PKCS#12")
    from cryptography.hazmat.primitives.serialization import pkcs12

    return pkcs12.serialize_key_and_certificates(
        PKCS12_ALIAS, key, svid.leaf, list(svid.intermediates) or None, encryption
    )


def pkcs12_matches(data: bytes, svid: X509SVID, password: bytes | None) -> bool:
    """True when `data` is a PKCS#12 that opens with `password` and holds exactly the key,
    leaf and intermediates of `svid` (so it need not be rewritten)."""
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        loaded = pkcs12.load_pkcs12(data, password)
    except (ValueError, TypeError):
        return False
    if loaded.key is None or loaded.cert is None:
        return False
    same_key = _spki(loaded.key.public_key()) == _spki(svid.private_key.public_key())
    same_leaf = _der(loaded.cert.certificate) == _der(svid.leaf)
    same_cas = [_der(c.certificate) for c in loaded.additional_certs] == [
        _der(c) for c in svid.intermediates
    ]
    return same_key and same_leaf and same_cas and loaded.cert.friendly_name == PKCS12_ALIAS


def _spki(key: Any) -> bytes:
    data: bytes = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return data


# What a PKCS#12 file read back at start-up may ask of a key derivation. Ours use 2048 (MAC)
# and 20000 (PBKDF2); a file with 2^31 - 1 would stall start-up for minutes.
MAX_PKCS12_ITERATIONS = 100_000
_MAX_DER_DEPTH = 24


class _Malformed(ValueError):
    pass


class _TooCostly(ValueError):
    pass


def _der_elements(data: bytes, start: int, end: int) -> Iterable[tuple[int, int, int]]:
    """(tag, content start, content end) of each DER element in data[start:end]."""
    at = start
    while at < end:
        if at + 2 > end:
            raise _Malformed("truncated")
        tag, first = data[at], data[at + 1]
        if tag & 0x1F == 0x1F:
            raise _Malformed("multi-byte tag")
        at += 2
        if first & 0x80:
            count = first & 0x7F
            if count == 0 or count > 4 or at + count > end:
                raise _Malformed("bad length")
            size = int.from_bytes(data[at:at + count], "big")
            at += count
        else:
            size = first
        if at + size > end:
            raise _Malformed("element overruns its parent")
        yield tag, at, at + size
        at += size


def _check_iterations(data: bytes, start: int, end: int, depth: int) -> None:
    """Walk constructed elements and OCTET STRINGs that hold DER; every INTEGER right after
    an OCTET STRING (MacData's iterations, PBKDF2 and PKCS#12 PBE parameters: salt, then
    the count) must be a count from 1 to MAX_PKCS12_ITERATIONS."""
    if depth > _MAX_DER_DEPTH:
        raise _Malformed("nested too deeply")
    previous = -1
    for tag, cstart, cend in _der_elements(data, start, end):
        if tag == 0x02 and previous == 0x04:
            if cend - cstart > 4:
                raise _TooCostly("iteration count too large")
            count = int.from_bytes(data[cstart:cend], "big", signed=True)
            if not 1 <= count <= MAX_PKCS12_ITERATIONS:
                raise _TooCostly(f"iteration count {count}")
        if tag & 0x20:
            _check_iterations(data, cstart, cend, depth + 1)
        elif tag == 0x04:
            # encapsulated DER (authSafe, SafeContents), or opaque bytes
            with contextlib.suppress(_Malformed):
                _check_iterations(data, cstart, cend, depth + 1)
        previous = tag


def pkcs12_iterations_ok(data: bytes) -> bool:
    """True when `data` is DER whose key derivations are all cheap (see
    MAX_PKCS12_ITERATIONS); checked before cryptography is handed a file read from disk."""
    try:
        elements = list(_der_elements(data, 0, len(data)))
        if len(elements) != 1 or elements[0][0] != 0x30:
            return False
        _check_iterations(data, 0, len(data), 0)
    except ValueError:
        return False
    return True


@dataclass
class Pkcs12Memo:
    """Keeps the last PKCS#12 bytes so an unchanged identity renders to identical bytes
    (encryption salts are random): unchanged files are skipped, nothing reloads."""

    fingerprint: bytes = b""
    data: bytes = field(default=b"", repr=False)

    @staticmethod
    def _key(svid: X509SVID, password: bytes | None) -> bytes:
        secret = b"\x00" if password is None else b"\x01" + password
        return _fingerprint(svid.private_key_der, *(_der(c) for c in svid.chain), secret)

    def adopt(self, data: bytes, svid: X509SVID, password: bytes | None) -> None:
        """Reuse `data` (the file on disk) when it already holds this identity. It is a
        hint only: a file that asks for costly key derivations is not even opened."""
        if pkcs12_iterations_ok(data) and pkcs12_matches(data, svid, password):
            self.fingerprint, self.data = self._key(svid, password), data

    def render(self, svid: X509SVID, password: bytes | None) -> bytes:
        key = self._key(svid, password)
        if key != self.fingerprint:
            self.fingerprint, self.data = key, pkcs12_bytes(svid, password)
        return self.data


# --- SPIFFE Filesystem Delivery ----------------------------------------------------------------


def trust_bundle_file_name(trust_domain: str) -> str:
    return f"{trust_domain}{TRUST_BUNDLE_SUFFIX}"


def trust_bundle_name_fits(trust_domain: str) -> bool:
    """False when the trust domain's file name is longer than a directory entry allows
    (NAME_MAX, 255 bytes: a valid trust domain name may be up to 255 bytes itself)."""
    return len(trust_bundle_file_name(trust_domain).encode("utf-8", "surrogatepass")) <= NAME_MAX


def trust_domain_of_file(name: str) -> str | None:
    """The trust domain a trust bundle file name is for, or None for other names."""
    if not name.endswith(TRUST_BUNDLE_SUFFIX) or name.startswith("."):
        return None
    return name[: -len(TRUST_BUNDLE_SUFFIX)] or None


def credential_chain(svid: X509SVID, anchors: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """Leaf to root, without the trust anchor: certificates that are authorities of the
    trust domain are dropped (an agent may send the root along)."""
    anchor_ders = {_der(a) for a in anchors}
    return [svid.leaf] + [c for c in svid.intermediates if _der(c) not in anchor_ders]


def credential_bundle_pem(svid: X509SVID, anchors: Sequence[x509.Certificate]) -> bytes:
    """PRIVATE KEY (PKCS#8), then CERTIFICATE blocks leaf to root without the root; no PEM
    headers, nothing between blocks."""
    return pem_block("PRIVATE KEY", svid.private_key_der) + b"".join(
        pem_block("CERTIFICATE", _der(c)) for c in credential_chain(svid, anchors)
    )


def render_credential_folder(
    snapshot: X509Snapshot,
    svid: X509SVID,
    folder: Path,
    *,
    key_mode: int,
    cert_mode: int,
    present: Iterable[str] = (),
) -> list[OutputFile]:
    """The credential folder's files: one trust bundle per trust domain of the snapshot
    (own and federated), then the credential bundle. Trust bundle files `present` in the
    folder whose trust domain left the snapshot are redacted: written empty, as the
    standard asks (an empty file means "withdrawn"; a missing one may be a remount).
    A trust domain whose file name cannot be made (`trust_bundle_name_fits`) is left out;
    the caller reports it."""
    files = [
        OutputFile(folder / trust_bundle_file_name(td),
                   certificates_pem(snapshot.bundles[td], omit_expired=False, now=_EPOCH),
                   cert_mode, secret=False)
        for td in sorted(snapshot.bundles) if trust_bundle_name_fits(td)
    ]
    named = {td for td in map(trust_domain_of_file, present) if td is not None}
    files += [
        OutputFile(folder / trust_bundle_file_name(td), b"", cert_mode, secret=False)
        for td in sorted(named - set(snapshot.bundles))
    ]
    anchors = snapshot.bundles.get(svid.trust_domain, ())
    files.append(OutputFile(folder / CREDENTIAL_BUNDLE_NAME, credential_bundle_pem(svid, anchors),
                            key_mode, secret=True))
    return files


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)  # omit_expired is off: unused


# --- SPIFFE bundle map -------------------------------------------------------------------------


MAX_SEED_BYTES = 4 << 20
MAX_SEED_DEPTH = 16  # a bundle map is 6 deep
MAX_SEQUENCE = 1 << 63  # readers hold it in an int64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_at_most(data: bytes, depth: int) -> bool:
    """False when the JSON text `data` nests arrays and objects more than `depth` deep (or
    its brackets do not pair up). C-speed passes only: no recursion, no parse."""
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    for _ in range(depth):
        if not brackets:
            return True
        shorter = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if len(shorter) == len(brackets):
            return False
        brackets = shorter
    return not brackets


def next_sequence(previous: int, now_seconds: int) -> int:
    """Monotonic and changed on every update, even across restarts that lost the file:
    the larger of previous + 1 and the current Unix time."""
    return max(previous + 1, now_seconds)


@dataclass
class BundleSequences:
    """``spiffe_sequence`` per trust domain: kept while its authorities are unchanged."""

    known: dict[str, tuple[bytes, int]] = field(default_factory=dict)

    def seed(self, data: bytes) -> None:
        """Take the sequences of a bundle map written earlier. A hint only: anything odd
        (too large, nested too deeply, not our shape, a sequence out of range) and the
        whole file is ignored (and rewritten)."""
        if len(data) > MAX_SEED_BYTES or not json_depth_at_most(data, MAX_SEED_DEPTH):
            return
        from helper.identity.jwks import X509_SVID_USE

        known: dict[str, tuple[bytes, int]] = {}
        try:
            doc = json.loads(data)
            domains = doc["trust_domains"]
            for td, entry in domains.items():
                ders = [base64.b64decode(k["x5c"][0], validate=True) for k in entry["keys"]
                        if k.get("use") == X509_SVID_USE and k.get("x5c")]
                seq = entry.get("spiffe_sequence")
                if not (isinstance(seq, int) and not isinstance(seq, bool)
                        and 0 <= seq < MAX_SEQUENCE):
                    return
                known[td] = (_fingerprint(*ders), seq)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError):
            return
        self.known.update(known)

    def sequence(self, trust_domain: str, certs: Sequence[x509.Certificate],
                 now_seconds: int) -> int:
        fingerprint = _fingerprint(*(_der(c) for c in certs))
        previous = self.known.get(trust_domain)
        if previous is not None and previous[0] == fingerprint:
            return previous[1]
        seq = next_sequence(previous[1] if previous else 0, now_seconds)
        self.known[trust_domain] = (fingerprint, seq)
        return seq


def authority_jwk(cert: x509.Certificate) -> dict[str, Any] | None:
    """An X.509 authority as a SPIFFE bundle key: use x509-svid, key parameters, x5c."""
    from helper.identity.jwks import X509_SVID_USE, jwk

    return jwk(cert.public_key(), use=X509_SVID_USE,
               x5c=(base64.b64encode(_der(cert)).decode("ascii"),))


def bundle_map_json(
    bundles: Mapping[str, Sequence[x509.Certificate]],
    sequences: BundleSequences,
    now_seconds: int,
) -> bytes:
    """``{"trust_domains": {td: {"spiffe_sequence": N, "keys": [...]}}}``, trust domains
    sorted, indented for people, one trailing newline."""
    domains: dict[str, Any] = {}
    for td in sorted(bundles):
        certs = bundles[td]
        keys = [k for k in (authority_jwk(c) for c in certs) if k is not None]
        domains[td] = {"spiffe_sequence": sequences.sequence(td, certs, now_seconds),
                       "keys": keys}
    return (json.dumps({"trust_domains": domains}, indent=2) + "\n").encode()


# --- JWT bundle file ---------------------------------------------------------------------------


def jwt_bundle_file_json(bundles: JWTBundleSet) -> bytes:
    """The Go helper's JWT bundle file: a compact JSON object mapping each trust domain name
    to the standard base64 of its JWKS (go-spiffe's jwtbundle.Marshal), keys sorted as Go's
    json.Marshal sorts map keys; no trailing newline."""
    from helper.identity.jwks import jwks_json

    doc = {td: base64.b64encode(jwks_json(bundles[td])).decode("ascii") for td in bundles}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
