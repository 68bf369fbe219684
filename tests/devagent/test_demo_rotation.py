"""The demo shows rotations a person can verify (issue 16, item 7), through the real CLI.

Inode numbers are reused by the filesystem, so they prove nothing; the demo prints the
leaf's serial, SHA-256 fingerprint and notAfter before and after each rotation, and
whether the key changed. Here the printed values are checked against the files on disk.
"""

from __future__ import annotations

import itertools
import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from util import run_helper


def test_demo_prints_serial_fingerprint_not_after_and_key_change_per_rotation(tmp_path):
    demo = tmp_path / "demo"
    result = run_helper("demo", "-dir", str(demo), "-rotations", "3", timeout=60)
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    assert "inode" not in out
    blocks = re.split(r"^rotation \d+: ", out, flags=re.M)[1:]
    assert len(blocks) == 3
    serials, fingerprints = [], []
    for block in blocks:
        serial = re.findall(r"(?:serial\s+before|after)\s+([0-9A-F]{20,})$", block, re.M)
        fps = re.findall(r"((?:[0-9A-F]{2}:){31}[0-9A-F]{2})", block)
        assert len(serial) == 2, block
        assert len(fps) == 2, block
        assert serial[0] != serial[1]
        assert fps[0] != fps[1]
        assert re.search(r"notAfter\s+before \d{4}-\d\d-\d\dT", block)
        assert "holds a new key" in block
        serials.append(serial)
        fingerprints.append(fps)
    # each rotation starts where the previous one ended
    for previous, following in itertools.pairwise(serials):
        assert previous[1] == following[0]
    # the last "after" is what is on disk
    leaf = x509.load_pem_x509_certificates((demo / "svid.pem").read_bytes())[0]
    assert serials[-1][1] == f"{leaf.serial_number:X}"
    assert fingerprints[-1][1] == ":".join(f"{b:02X}" for b in leaf.fingerprint(hashes.SHA256()))
    assert "openssl x509 -in" in out
