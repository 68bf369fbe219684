"""Files the helper reads that someone else controls (issue 12, items 5 and 9): names that
cannot be written, and files read back at start-up, which are hints.

The real CLI against the real dev-agent.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from supervised import Run, hcl, write_conf
from util import leaf_serial, run_helper, wait_for

from helper.outputs.formats import BundleSequences, pkcs12_bytes
from helper.outputs.writer import AtomicWriter, is_temp_name, temp_name

NAME_MAX = 255


# --- item 5: names that cannot be written -----------------------------------------------------


@pytest.mark.parametrize("name", ["a" * 255, "a" * 230, "é" * 127, "k.pem"])
def test_temp_names_fit_name_max_whenever_the_final_name_does(name):
    temp = temp_name(Path("/d") / name, "0123456789abcdef")
    assert len(os.fsencode(temp.name)) <= NAME_MAX
    assert is_temp_name(temp.name)
    assert temp.parent == Path("/d")


def test_a_230_byte_output_name_is_written(tmp_path, agent, certs):
    name = "c" * 226 + ".pem"
    writer = AtomicWriter()
    from helper.outputs.pem import OutputFile
    assert writer.write_set([OutputFile(certs / name, b"data", 0o644, secret=False)])
    assert (certs / name).read_bytes() == b"data"
    conf = write_conf(tmp_path, agent, certs, f'svid_combined_file_name = "{name}"\n')
    assert run_helper("check-config", "-config", str(conf)).returncode == 0
    with Run(tmp_path, conf) as helper:
        wait_for(lambda: b"PRIVATE KEY" in (certs / name).read_bytes(), what="the combined file")
        assert "File name too long" not in helper.log()


def test_check_config_refuses_output_names_over_name_max(tmp_path, agent, certs):
    conf = write_conf(tmp_path, agent, certs, f'svid_combined_file_name = "{"c" * 256}"\n')
    result = run_helper("check-config", "-config", str(conf))
    assert result.returncode == 2
    assert "svid_combined_file_name" in result.stderr
    assert "255" in result.stderr
    conf = write_conf(tmp_path, agent, certs, f'credential_folder = "{"f" * 256}/x"\n')
    result = run_helper("check-config", "-config", str(conf))
    assert result.returncode == 2
    assert "credential_folder" in result.stderr


def test_federated_trust_domains_with_long_names_in_the_credential_folder(
        tmp_path, agent, certs):
    folder = certs / "spiffe"
    folder.mkdir()
    fits = "a" * 198 + ".org"  # 202 bytes: the file name is 231, the temp would be 267
    too_long = "b" * 240 + ".org"  # a valid trust domain whose file name is over 255
    conf = write_conf(tmp_path, agent, certs, 'credential_folder = "spiffe"\n'
                      "reload_debounce = 0\n")
    with Run(tmp_path, conf) as helper:
        wait_for(lambda: (folder / "credential-bundle.private-key.x509.pem").exists(),
                 what="the credential folder")
        serial = leaf_serial(certs / "svid.pem")
        agent.set_federated([fits, too_long])
        wait_for(lambda: (folder / f"{fits}.spiffe-trust-bundle.x509.pem").exists(),
                 what="the 198-byte trust domain's bundle")
        helper.wait_log("cannot be named")
        agent.rotate()
        wait_for(lambda: leaf_serial(certs / "svid.pem") != serial, what="the next rotation")
        assert "File name too long" not in helper.log()
        assert len([ln for ln in helper.log().splitlines() if "cannot be named" in ln]) == 1


# --- item 9: files read back at start-up are hints ---------------------------------------------


def test_a_deeply_nested_bundle_map_is_ignored_and_rewritten(tmp_path, agent, certs):
    (certs / "bundle_map.json").write_text("[" * 1_000_000 + "]" * 1_000_000)
    conf = write_conf(tmp_path, agent, certs, 'spiffe_bundle_map_file_name = "bundle_map.json"\n')
    with Run(tmp_path, conf) as helper:
        wait_for(lambda: (certs / "bundle_map.json").read_bytes().startswith(b"{"),
                 what="the bundle map rewritten")
        assert helper.proc.poll() is None
    assert "RecursionError" not in helper.log()
    assert "trust_domains" in json.loads((certs / "bundle_map.json").read_text())


def test_bundle_sequences_seed_is_bounded():
    seq = BundleSequences()
    seq.seed(b"[" * 100_000 + b"]" * 100_000)
    seq.seed(b'{"trust_domains": ' + b"[" * 50 + b"]" * 50 + b"}")
    seq.seed(b"\xff" * 10)
    assert seq.known == {}


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_read(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the element at `at`."""
    tag, first = data[at], data[at + 1]
    at += 2
    if first < 0x80:
        return tag, at, at + first
    size = int.from_bytes(data[at:at + (first & 0x7F)], "big")
    at += first & 0x7F
    return tag, at, at + size


def _der_children(data: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        _, _start, end = _der_read(data, at)
        out.append(data[at:end])
        at = end
    return out


def with_mac_iterations(p12: bytes, iterations: int) -> bytes:
    """`p12` with the iteration count of its MacData replaced (the MAC is then wrong too,
    which a reader can only find out after running the iterations)."""
    tag, start, end = _der_read(p12, 0)
    version, auth_safe, mac_data = _der_children(p12[start:end])
    mtag, mstart, mend = _der_read(mac_data, 0)
    digest_info, salt, _old = _der_children(mac_data[mstart:mend])
    value = iterations.to_bytes((iterations.bit_length() + 8) // 8, "big")
    new_mac_body = digest_info + salt + b"\x02" + _der_len(len(value)) + value
    new_mac = bytes([mtag]) + _der_len(len(new_mac_body)) + new_mac_body
    body = version + auth_safe + new_mac
    return bytes([tag]) + _der_len(len(body)) + body


def test_a_keystore_with_2_to_the_31_mac_iterations_does_not_stall_start_up(
        tmp_path, agent, certs):
    from cryptography.hazmat.primitives.serialization import pkcs12

    password = tmp_path / "p12.pass"
    password.write_text("pw\n")
    conf = write_conf(tmp_path, agent, certs, 'pkcs12_file_name = "k.p12"\n'
                      f"pkcs12_password_file = {hcl(str(password))}\n")
    with Run(tmp_path, conf):
        wait_for(lambda: (certs / "k.p12").exists(), what="the first keystore")
    good = (certs / "k.p12").read_bytes()
    assert pkcs12.load_pkcs12(with_mac_iterations(good, 2048), b"pw") is not None
    hostile = with_mac_iterations(good, 2 ** 31 - 1)  # OpenSSL refuses 2^31 itself
    (certs / "k.p12").write_bytes(hostile)
    began = time.monotonic()
    with Run(tmp_path, conf):
        wait_for(lambda: (certs / "k.p12").read_bytes() != hostile, timeout=20,
                 what="the keystore rewritten")
    assert time.monotonic() - began < 20
    loaded = pkcs12.load_pkcs12((certs / "k.p12").read_bytes(), b"pw")
    assert loaded.cert is not None


def test_pkcs12_iteration_counts_are_checked_before_any_key_derivation():
    from helper.outputs.formats import pkcs12_iterations_ok
    data = pkcs12_bytes(_an_svid(), b"pw")
    assert pkcs12_iterations_ok(data)
    assert pkcs12_iterations_ok(pkcs12_bytes(_an_svid(), None))
    assert not pkcs12_iterations_ok(with_mac_iterations(data, 2 ** 31 - 1))
    assert not pkcs12_iterations_ok(with_mac_iterations(data, 2 ** 31))
    assert not pkcs12_iterations_ok(with_mac_iterations(data, 0))
    assert not pkcs12_iterations_ok(b"\x30\x80garbage")
    assert not pkcs12_iterations_ok(b"")


def _an_svid():
    from pki import make_leaf, make_root, pkcs8_der

    from helper.identity.snapshot import X509SVID
    root = make_root("example.org")
    leaf = make_leaf(root, "spiffe://example.org/w")
    return X509SVID("spiffe://example.org/w", "example.org", (leaf.cert,), leaf.key,
                    pkcs8_der(leaf.key))


def test_a_bundle_map_with_an_odd_sequence_is_ignored_whole():
    seq = BundleSequences()
    seq.seed(b'{"trust_domains": {"a.org": {"spiffe_sequence": 5, "keys": []},'
             b' "b.org": {"spiffe_sequence": ' + b"9" * 40 + b', "keys": []}}}')
    assert seq.known == {}
    seq.seed(b'{"trust_domains": {"a.org": {"spiffe_sequence": 5, "keys": []}}}')
    assert seq.known["a.org"][1] == 5


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(body)) + body


def test_iteration_counts_are_found_inside_encapsulated_der():
    from helper.outputs.formats import pkcs12_iterations_ok
    def params(count: int) -> bytes:
        inner = _tlv(0x30, _tlv(0x04, b"saltsalt") + _tlv(0x02, count.to_bytes(4, "big")))
        return _tlv(0x30, _tlv(0x02, b"\x03") + _tlv(0x04, inner))
    assert pkcs12_iterations_ok(params(20000))
    assert not pkcs12_iterations_ok(params(1 << 30))
