"""Operations end to end over real HTTP: health, metrics, status, expiry and readiness."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import grpc
from ops_setup import Setup, http, http_or_none, lines_with, metric, start
from pki import TrustDomainCA, response, svid_message, with_foreign_key
from util import (
    REQUIRED_METRICS,
    free_port,
    leaf_serial,
    read_certs,
    run_helper,
    serial_of,
    wait_for,
)

from helper._proto import workload_pb2
from helper.devagent import DevAgentThread

GO_READY_BODY = (b'{"status":"OK","health":{"file_write_statuses":'
                 b'{"x509_write_status":"written","jwt_write_status":{}}}}')


# --- health, metrics, status over real HTTP ------------------------------------------------


def test_health_metrics_and_status_over_real_http(tmp_path, agent, certs):
    setup = Setup(tmp_path, agent, certs)
    agent.fail_next(1000, grpc.StatusCode.PERMISSION_DENIED, "no identity issued yet")
    with start(setup, tmp_path) as helper:
        # not ready while nothing is written; live all the same (Go's rules)
        code, headers, body = wait_for(lambda: http_or_none(setup.url("/ready")),
                                       what="health listener")
        assert code == 503
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"status": "Service Unavailable", "health": {
            "file_write_statuses": {"x509_write_status": "unwritten", "jwt_write_status": {}}}}
        assert http(setup.url("/live"))[0] == 200

        wait_for(lambda: agent.calls >= 1, what="a refused call")  # a retry to count
        agent.fail_next(0, grpc.StatusCode.PERMISSION_DENIED)
        wait_for(lambda: http(setup.url("/ready"))[0] == 200, what="ready", timeout=15)
        assert http(setup.url("/ready"))[2] == GO_READY_BODY
        assert http(setup.url("/live"))[2] == GO_READY_BODY

        serial = serial_of(agent.rotate())
        wait_for(lambda: metric(setup, "spiffe_helper_x509_rotations_total") == 1,
                 what="rotation counted")
        agent.push(with_foreign_key(agent.current))
        refused = 'spiffe_helper_refused_messages_total{rule="key_matches_leaf"}'
        wait_for(lambda: metric(setup, refused) == 1, what="refusal counted")

        code, headers, body = http(setup.url("/metrics"))
        assert code == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = body.decode()
        for name in REQUIRED_METRICS:
            assert f"# TYPE {name} " in text, name
        leaf = read_certs(certs / "svid.pem")[0]
        assert metric(setup, "spiffe_helper_x509_svid_expiry_timestamp_seconds") == \
            leaf.not_valid_after_utc.timestamp()
        assert metric(setup, "spiffe_helper_workload_api_reconnects_total") >= 1
        assert metric(setup, "spiffe_helper_last_rotation_timestamp_seconds") > 0

        doc = json.loads(http(setup.url("/status"))[2])
        assert doc["spiffe_id"] == agent.spiffe_id
        assert doc["x509"]["serial"] == f"{serial:x}"
        assert doc["ready"] is True
        assert doc["x509"]["rotations"] == 1

        assert http(setup.url("/ready"), method="HEAD")[2] == b""
        assert http(setup.url("/ready"), method="POST")[0] == 405
        assert http(setup.url("/nothing-here"))[0] == 404

        for how in (["-config", str(setup.path)], ["--url", f"http://127.0.0.1:{setup.port}"]):
            result = run_helper("status", *how)
            assert result.returncode == 0, result.stderr
            rows = dict(re.split(r"\s{2,}", line, maxsplit=1)
                        for line in result.stdout.splitlines())
            assert rows["identity"] == agent.spiffe_id
            assert rows["x509 expires"].startswith(leaf.not_valid_after_utc.isoformat()[:19])
            assert rows["x509 serial"] == f"{serial:x}"
            assert rows["last rotation"].endswith(" ago)")
            assert rows["rotations"] == "1"
            assert rows["child"] == "-"  # no cmd configured
            assert rows["live / ready"] == "yes / yes"
        assert helper.stop() == 0


def test_status_command_says_when_no_helper_answers(tmp_path):
    result = run_helper("status", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "cannot read" in result.stderr


def test_health_listener_is_daemon_mode_only_as_in_go(tmp_path, agent, certs):
    setup = Setup(tmp_path, agent, certs)
    result = run_helper("-config", str(setup.path), "-daemon-mode=false")
    assert result.returncode == 0, result.stderr
    assert "health listener" not in result.stderr
    assert "has no effect when daemon_mode is false" in result.stderr


def test_one_shot_imports_no_http_server_no_file_watcher(tmp_path, agent, certs):
    setup = Setup(tmp_path, agent, certs)
    setup.write(extra="watch_config = true")
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "helper", "-config",
                             str(setup.path), "-daemon-mode=false"], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "helper.app" in imported
    assert not {"watchdog", "helper.ops.health", "helper.ops.sdnotify", "helper.config.watch",
                "helper.config.reload_plan",
                "http.server"} & imported


def test_version_prints_helper_python_grpcio_and_openssl_versions():
    import ssl

    from helper import __version__

    out = run_helper("-version").stdout.splitlines()
    assert out[0] == f"spiffe-helper {__version__}"
    assert f"Python {sys.version.split()[0]}" in out
    assert f"grpcio {grpc.__version__}" in out
    assert f"OpenSSL {ssl.OPENSSL_VERSION.split()[1]}" in out


def short_lived(agent: DevAgentThread, left: float,
                lifetime: float) -> workload_pb2.X509SVIDResponse:
    """A valid SVID for the agent's SPIFFE ID that expires in `left` seconds."""
    ca = TrustDomainCA.create("example.org")
    now = datetime.now(timezone.utc)
    path = agent.spiffe_id.split("example.org", 1)[1]
    leaf = ca.leaf(path, not_before=now + timedelta(seconds=left - lifetime),
                   not_after=now + timedelta(seconds=left))
    return response(svid_message(agent.spiffe_id, [leaf, ca.intermediate], [ca.root]))


def test_expiry_warning_then_readiness_fails_until_a_renewal_arrives(tmp_path, agent, certs):
    setup = Setup(tmp_path, agent, certs)
    with start(setup, tmp_path) as helper:
        wait_for(lambda: leaf_serial(certs / "svid.pem"), what="first write")
        agent.wait_streams(1)
        # 12 s lifetime, 4 s left: the 1/6 mark comes about 2 s after the write, leaving a
        # loaded machine room to deliver and write the SVID before the mark
        message = short_lived(agent, left=4.0, lifetime=12.0)
        agent.push(message)
        serial = serial_of(message)
        wait_for(lambda: leaf_serial(certs / "svid.pem") == serial, what="short-lived SVID")
        warning = wait_for(lambda: lines_with(helper, "no update has come"), what="warning")
        assert f"serial {serial:x}" in warning[0]
        assert "less than 1/6 of its lifetime left" in warning[0]
        log = helper.output()
        assert log.index(f"serial {serial:x}, expires") < log.index("no update has come")
        # expired and no renewal: not ready any more, but live
        wait_for(lambda: http(setup.url("/ready"))[0] == 503, what="not ready after expiry")
        assert http(setup.url("/live"))[0] == 200
        assert lines_with(helper, "no renewal arrived")
        # the renewal arrives
        agent.rotate()
        wait_for(lambda: http(setup.url("/ready"))[0] == 200, what="ready again")
        assert helper.stop() == 0
