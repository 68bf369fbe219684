"""Secrets never leave (issue 8, item 11): a debug-level helper goes through rotations,
refusals of messages that carry key material in odd places, and a failed write; no private
key (PEM block, base64 or hex of its DER) and no JWT-shaped string appears in its output,
its health, metrics and status answers, or the errors it keeps (status.last_error)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pki
import pytest
from cryptography.hazmat.primitives import serialization
from relutil import (
    RECORDER,
    assert_no_secret,
    cmd_lines,
    consistent_serial,
    first_write,
    health_block,
    http_get,
    records,
    refusals,
    serial_of,
    write_conf,
)
from util import HelperProcess, free_port, run_helper, wait_for

from helper._proto import workload_pb2
from helper.app import initial_status
from helper.config import loads
from helper.devagent import DevAgentThread
from helper.features import PipelineEvents
from helper.outputs.writer import AtomicWriter
from helper.outputs.x509_pipeline import X509Pipeline

CA = pki.TrustDomainCA.create("example.org")


async def _ignored(*_: object) -> None:
    return None


NO_EVENTS = PipelineEvents(written=_ignored, first_write=_ignored)  # accept() reports nothing


def hostile_messages() -> tuple[list[workload_pb2.X509SVIDResponse], list[bytes]]:
    """Refused messages with key material where it does not belong, and those keys."""
    leaf = CA.leaf()
    good = CA.svid(leaf=leaf)
    foreign = pki.new_key()
    pkcs1 = pki.new_key("rsa")
    keys = [pki.pkcs8_der(foreign), pki.pkcs8_der(pkcs1), leaf.key_der]
    messages = []
    mismatch = workload_pb2.X509SVID()
    mismatch.CopyFrom(good)
    mismatch.x509_svid_key = keys[0]  # a key that does not match: key_matches_leaf
    messages.append(pki.response(mismatch))
    traditional = workload_pb2.X509SVID()
    traditional.CopyFrom(good)
    traditional.x509_svid_key = pkcs1.private_bytes(  # not PKCS#8: der_parse
        serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption())
    keys.append(bytes(traditional.x509_svid_key))
    messages.append(pki.response(traditional))
    swapped = workload_pb2.X509SVID()
    swapped.CopyFrom(good)
    swapped.x509_svid, swapped.x509_svid_key = good.x509_svid_key, good.x509_svid  # der_parse
    messages.append(pki.response(swapped))
    truncated = workload_pb2.X509SVID()
    truncated.CopyFrom(good)
    truncated.x509_svid_key = good.x509_svid_key[:-7]  # der_parse
    messages.append(pki.response(truncated))
    return messages, keys


def test_debug_logs_of_rotations_refusals_and_failures_hold_no_key_or_token(
        tmp_path: Path, certs: Path, agent: DevAgentThread) -> None:
    port = free_port()
    conf = write_conf(tmp_path, agent.socket_path, certs, health_block(port))
    keys: list[bytes] = []
    served: list[str] = []
    hostile, hostile_keys = hostile_messages()
    keys.extend(hostile_keys)
    with HelperProcess("-config", str(conf), "--log-level", "debug",
                       log=tmp_path / "helper.log") as helper:
        first_write(certs)
        agent.wait_streams(1)
        keys.extend(bytes(s.x509_svid_key) for s in agent.current.svids)
        for n, message in enumerate(hostile, start=1):
            agent.push(message)
            wait_for(lambda n=n: sum(refusals(helper.output()).values()) == n, 10, "refusal")
            good = agent.rotate()
            keys.extend(bytes(s.x509_svid_key) for s in good.svids)
            wait_for(lambda g=good: consistent_serial(certs) == serial_of(g), 10, "rotation")
        assert sum(refusals(helper.output()).values()) == len(hostile), helper.output()
        for path in ("/live", "/ready", "/metrics", "/status"):
            answer = http_get(port, path)
            assert answer is not None
            assert answer[0] == 200, (path, answer)
            served.append(answer[1])
        assert "refused_messages_total" in served[2]
        assert helper.stop() == 0
        text_log = helper.output()
    # one-shot, JSON logs, a directory in the key file's place: the failed write is logged
    blocked = tmp_path / "blocked"
    (blocked / "svid_key.pem").mkdir(parents=True)
    conf2 = write_conf(tmp_path, agent.socket_path, blocked, "startup_timeout = 3\n",
                       name="blocked.conf")
    result = run_helper("-config", str(conf2), "-daemon-mode=false", "--log-level", "debug",
                        "--log-format", "json", timeout=30)
    assert result.returncode == 1, result.stderr
    assert "cannot write" in result.stderr
    keys.extend(bytes(s.x509_svid_key) for s in agent.current.svids)
    for text in (text_log, result.stdout, result.stderr, *served):
        assert_no_secret(text, keys)
    assert "refused X.509-SVID message (rule key_matches_leaf)" in text_log  # it did log


def test_errors_kept_for_health_and_metrics_hold_no_key(tmp_path: Path) -> None:
    """status.last_error (shown by health and metrics features) after each kind of failure."""
    certs = tmp_path / "certs"
    certs.mkdir()
    cfg = loads(f'cert_dir = "{certs}"\nsvid_file_name = "s.pem"\n'
                'svid_key_file_name = "k.pem"\nsvid_bundle_file_name = "b.pem"\n',
                environ={})
    status = initial_status(cfg)
    pipeline = X509Pipeline(cfg, AtomicWriter(), status, NO_EVENTS)
    hostile, keys = hostile_messages()
    errors = []
    for message in hostile:
        assert pipeline.accept(message) is None
        errors.append(status.last_error)
    good = pki.response(CA.svid())
    keys.append(bytes(good.svids[0].x509_svid_key))
    certs.rmdir()  # the next write fails
    assert pipeline.accept(good) is None
    errors.append(status.last_error)
    assert status.write_failures == 1
    assert sum(status.refused.values()) == len(hostile)
    assert all(errors)
    assert_no_secret("\n".join(errors), keys)


def test_the_leak_detector_itself_catches_each_form() -> None:
    key = pki.new_key()
    der = pki.pkcs8_der(key)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    body_line = pem.splitlines()[2]
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy93In0.c2lnbmF0dXJl"
    for leak in (pem, f"key={der.hex()}", f"line {body_line} end", f"token {jwt}"):
        with pytest.raises(AssertionError):
            assert_no_secret(leak, [der])
    assert_no_secret("nothing to see", [der])


def test_tokens_passwords_and_keys_stay_out_of_logs_health_and_the_childs_environment(
        tmp_path: Path, certs: Path) -> None:
    """Every secret-bearing output at once (JWT-SVID, PKCS#12 with a password, combined PEM,
    credential folder) with a child; a JWT-SVID that is valid but for another audience (a
    usable credential elsewhere) is refused, and must not be logged either."""
    password = "p12-" + secrets.token_hex(12)
    password_file = tmp_path / "p12pass"
    password_file.write_text(password + "\n")
    (certs / "spiffe").mkdir()
    rec = tmp_path / "child.jsonl"
    port = free_port()
    with DevAgentThread(str(tmp_path / "agent" / "api.sock")) as agent:
        elsewhere = agent.ca.mint_jwt_svid(agent.spiffe_id, ["someone-else"], 300)
        agent.queue_jwt_svid_responses(workload_pb2.JWTSVIDResponse(
            svids=[workload_pb2.JWTSVID(spiffe_id=agent.spiffe_id, svid=elsewhere)]))
        extra = (
            'jwt_svids = [{jwt_audience = "db", jwt_svid_file_name = "db.token"}]\n'
            'jwt_bundle_file_name = "jwt_bundle.json"\n'
            'svid_combined_file_name = "combined.pem"\n'
            'pkcs12_file_name = "keystore.p12"\n'
            f'pkcs12_password_file = "{password_file}"\n'
            'credential_folder = "spiffe"\n'
            + cmd_lines(RECORDER, "--record", str(rec)) + 'renew_signal = "SIGHUP"\n'
            + health_block(port))
        conf = write_conf(tmp_path, agent.socket_path, certs, extra)
        with HelperProcess("-config", str(conf), "--log-level", "debug",
                           log=tmp_path / "helper.log") as helper:
            wait_for(lambda: (certs / "db.token").exists(), 15, "the JWT-SVID on disk")
            first_write(certs)
            assert "refused JWT-SVID for audience 'db' (rule jwt_aud)" in helper.output()
            keys = [bytes(s.x509_svid_key) for s in agent.current.svids]
            good = agent.rotate()
            keys += [bytes(s.x509_svid_key) for s in good.svids]
            wait_for(lambda: consistent_serial(certs) == serial_of(good), 10, "rotation")
            child = wait_for(lambda: records(rec, "ready"), 10, "the child")[0]["pid"]
            environ = Path(f"/proc/{child}/environ").read_bytes().replace(b"\0", b"\n").decode()
            assert "SPIFFE_CREDENTIAL_FOLDER=" in environ  # it is the child's environment
            served = []
            for path in ("/live", "/ready", "/metrics", "/status"):
                answer = http_get(port, path)
                assert answer is not None
                served.append(answer[1])
            tokens = [elsewhere, (certs / "db.token").read_text()]
            assert helper.stop() == 0
            log = helper.output()
    assert " DEBUG " in log
    for text in (log, environ, *served):
        assert_no_secret(text, keys)
        for literal in (*tokens, password):
            assert literal not in text
