"""Operations end to end: what the logs hold (no key material, no tokens) and their format."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from ops_setup import Setup, http, lines_with, start
from pki import with_foreign_key
from util import (
    read_certs,
    run_helper,
    serial_of,
    wait_for,
)

JWT_SHAPED = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+")


# --- logs ------------------------------------------------------------------------------------


def pem_body_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines()
            if line and not line.startswith("-----")]


def key_lines_for(certs: Path, serial: int) -> list[str] | None:
    """The key file's PEM body once the key of the leaf `serial` is in place, else None.

    The writer renames the certificate and the key into place one after the other, so a
    reader that saw the new certificate may still find the old key, or no key at all yet.
    """
    try:
        leaf = read_certs(certs / "svid.pem")[0]
        key = serialization.load_pem_private_key((certs / "svid_key.pem").read_bytes(), None)
    except (FileNotFoundError, ValueError, IndexError):
        return None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if leaf.serial_number != serial or (
            key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki)):
        return None
    return pem_body_lines(certs / "svid_key.pem")


def test_a_debug_log_holds_no_key_material_or_tokens(tmp_path, agent, certs):
    setup = Setup(tmp_path, agent, certs)
    secrets: list[str] = []
    with start(setup, tmp_path, "--log-level", "debug") as helper:
        serial = serial_of(agent.current)
        secrets += wait_for(lambda: key_lines_for(certs, serial), what="first write")
        for _ in range(2):
            serial = serial_of(agent.rotate())
            secrets += wait_for(lambda s=serial: key_lines_for(certs, s), what="rotation")
        agent.push(with_foreign_key(agent.current))
        wait_for(lambda: lines_with(helper, "key_matches_leaf"), what="refusal")
        helper.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: lines_with(helper, "config reload"), what="reload")
        served = b"".join(http(setup.url(p))[2] for p in ("/status", "/metrics", "/ready"))
        assert helper.stop() == 0
    log = helper.output()
    assert " DEBUG " in log  # the run really logged at debug level
    for text in (log, served.decode()):
        assert "-----BEGIN" not in text
        assert not JWT_SHAPED.search(text)
        assert not [line for line in secrets if line in text]


def test_log_format_from_the_file_and_the_flag_that_overrides_it(tmp_path, agent, certs):
    setup = Setup(tmp_path, agent, certs)
    setup.write(extra='log_format = "json"\nlog_level = "info"')
    result = run_helper("-config", str(setup.path), "-daemon-mode=false")
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert any(str(certs / "svid.pem") in e["msg"] and e["level"] == "info" for e in entries)
    result = run_helper("-config", str(setup.path), "-daemon-mode=false", "--log-format", "text")
    assert result.returncode == 0, result.stderr
    assert not result.stderr.lstrip().startswith("{")
    assert " INFO " in result.stderr
