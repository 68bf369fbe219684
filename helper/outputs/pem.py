"""Snapshot -> the files the Go spiffe-helper writes, byte for byte. Pure: no I/O.

Layout (Go's pkg/disk/x509.go):
- SVID file: PEM CERTIFICATE blocks, leaf then intermediates;
- key file: one PEM "PRIVATE KEY" block of the PKCS#8 DER;
- bundle file: the SVID's own trust domain authorities, then (add_intermediates_to_bundle)
  the intermediates, which then leave the SVID file, then (include_federated_domains) the
  authorities of every other trust domain in the snapshot.
omit_expired drops certificates whose notAfter has passed from the SVID and bundle files.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from helper.identity.snapshot import X509Snapshot
from helper.identity.x509 import select_svid

PEM_LINE_CHARS = 64


class X509OutputConfig(Protocol):
    """The part of `helper.config.Config` that rendering X.509 files reads."""

    @property
    def cert_dir(self) -> str: ...
    @property
    def svid_file_name(self) -> str: ...
    @property
    def svid_key_file_name(self) -> str: ...
    @property
    def svid_bundle_file_name(self) -> str: ...
    @property
    def add_intermediates_to_bundle(self) -> bool: ...
    @property
    def include_federated_domains(self) -> bool: ...
    @property
    def omit_expired(self) -> bool: ...
    @property
    def cert_file_mode(self) -> int: ...
    @property
    def key_file_mode(self) -> int: ...
    @property
    def hint(self) -> str: ...

    def output_path(self, name: str) -> Path: ...


@dataclass(frozen=True)
class OutputFile:
    """One file to write. `secret`: holds a private key or token; its content is never logged."""

    path: Path
    data: bytes = field(repr=False)
    mode: int
    secret: bool


def pem_block(block_type: str, der: bytes) -> bytes:
    """One PEM block exactly as Go's pem.EncodeToMemory writes it (64-char lines, no headers)."""
    body = base64.b64encode(der)
    lines = [body[i : i + PEM_LINE_CHARS] + b"\n" for i in range(0, len(body), PEM_LINE_CHARS)]
    return b"".join(
        [
            f"-----BEGIN {block_type}-----\n".encode(),
            *lines,
            f"-----END {block_type}-----\n".encode(),
        ]
    )


def certificates_pem(
    certs: Iterable[x509.Certificate], *, omit_expired: bool, now: datetime
) -> bytes:
    """CERTIFICATE blocks in order; with `omit_expired`, those past notAfter are left out."""
    return b"".join(
        pem_block("CERTIFICATE", cert.public_bytes(Encoding.DER))
        for cert in certs
        if not (omit_expired and cert.not_valid_after_utc < now)
    )


def bundle_certificates(
    snapshot: X509Snapshot,
    trust_domain: str,
    intermediates: tuple[x509.Certificate, ...],
    *,
    include_federated: bool,
) -> list[x509.Certificate]:
    """The bundle file's certificates in Go's order: own authorities, moved intermediates,
    then the other trust domains' authorities.

    Go walks a map there, so its order between trust domains is random; ours is sorted by
    trust domain name to keep the file (and the skip-if-unchanged check) deterministic.
    Like Go, "other trust domains" is every bundle in the snapshot except the SVID's own.
    """
    certs = [*snapshot.bundles[trust_domain], *intermediates]
    if include_federated:
        for name in sorted(snapshot.bundles):
            if name != trust_domain:
                certs.extend(snapshot.bundles[name])
    return certs


def render_x509(
    snapshot: X509Snapshot, cfg: X509OutputConfig, *, now: datetime | None = None
) -> list[OutputFile]:
    """The SVID, key and bundle files, in that order (the order the writer renames them)."""
    if not (cfg.svid_file_name and cfg.svid_key_file_name and cfg.svid_bundle_file_name):
        raise ValueError(
            "render_x509 needs svid_file_name, svid_key_file_name and svid_bundle_file_name"
        )
    moment = now if now is not None else datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    svid = select_svid(snapshot, cfg.hint)
    chain = list(svid.chain)
    moved: tuple[x509.Certificate, ...] = ()
    if cfg.add_intermediates_to_bundle:
        chain, moved = chain[:1], svid.intermediates
    bundle = bundle_certificates(
        snapshot, svid.trust_domain, moved, include_federated=cfg.include_federated_domains
    )
    omit = cfg.omit_expired
    return [
        OutputFile(
            path=cfg.output_path(cfg.svid_file_name),
            data=certificates_pem(chain, omit_expired=omit, now=moment),
            mode=cfg.cert_file_mode,
            secret=False,
        ),
        OutputFile(
            path=cfg.output_path(cfg.svid_key_file_name),
            data=pem_block("PRIVATE KEY", svid.private_key_der),
            mode=cfg.key_file_mode,
            secret=True,
        ),
        OutputFile(
            path=cfg.output_path(cfg.svid_bundle_file_name),
            data=certificates_pem(bundle, omit_expired=omit, now=moment),
            mode=cfg.cert_file_mode,
            secret=False,
        ),
    ]
