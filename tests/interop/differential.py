"""Normalised views of what a helper wrote, for comparing the Go spiffe-helper and ours.

Two one-shot runs against the same SPIRE agent get different leaves (each fetch is a new
SVID) and JWTs, but the same CAs and JWT keys; so each file is described by what must be
equal: its mode, its PEM block types in order, each CA certificate by its bytes and each
leaf by its SPIFFE ID; JWT bundles decoded to key material per trust domain; JWT-SVIDs by
header algorithm, subject and audiences.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)


def _cert(der: bytes) -> str:
    cert = x509.load_der_x509_certificate(der)
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    if ca:
        return "CA " + cert.fingerprint(hashes.SHA256()).hex()[:16]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return "leaf " + ",".join(str(u) for u in san.get_values_for_type(
        x509.UniformResourceIdentifier))


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def describe_file(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    view: dict[str, Any] = {"mode": oct(path.stat().st_mode & 0o7777)}
    if b"-----BEGIN" in data:
        blocks = []
        for kind, body in PEM_BLOCK.findall(data):
            der = base64.b64decode(b"".join(body.split()))
            blocks.append(_cert(der) if kind == b"CERTIFICATE" else kind.decode())
        view["pem"] = blocks
    elif data.startswith(b"{"):
        doc = json.loads(data)
        view["jwt_bundles"] = {
            td: sorted(json.dumps({k: v for k, v in key.items()}, sort_keys=True)
                       for key in json.loads(base64.b64decode(jwks)).get("keys", []))
            for td, jwks in doc.items()}
    elif data.count(b".") == 2:
        head, body, _ = data.decode().split(".")
        claims = json.loads(_b64url(body))
        aud = claims["aud"]
        view["jwt"] = {"alg": json.loads(_b64url(head))["alg"], "sub": claims["sub"],
                       "aud": sorted([aud] if isinstance(aud, str) else aud),
                       "trailing_newline": data.endswith(b"\n")}
    else:
        view["bytes"] = len(data)
    return view


def describe_dir(root: Path) -> dict[str, dict[str, Any]]:
    return {str(p.relative_to(root)): describe_file(p)
            for p in sorted(root.rglob("*")) if p.is_file()}


def differences(go: dict[str, dict[str, Any]], ours: dict[str, dict[str, Any]]
                ) -> list[tuple[str, str, str]]:
    """(what, Go, ours) for each file or aspect that differs."""
    rows = []
    for name in sorted(set(go) | set(ours)):
        if name not in ours:
            rows.append((name, "written", "missing"))
        elif name not in go:
            rows.append((name, "missing", "written"))
        else:
            for aspect in sorted(set(go[name]) | set(ours[name])):
                a, b = go[name].get(aspect), ours[name].get(aspect)
                if a != b:
                    rows.append((f"{name} {aspect}", json.dumps(a), json.dumps(b)))
    return rows


def table(rows: list[tuple[str, str, str, str]]) -> str:
    """A fixed-width table of (config, what, Go, ours)."""
    head = ("config", "what", "Go spiffe-helper", "this helper")
    cells = [head, *[tuple(c if len(c) <= 60 else c[:57] + "..." for c in r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                     for r in cells)
