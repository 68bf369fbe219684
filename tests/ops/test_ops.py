"""Operations end to end: the real CLI against the dev-agent, read over real HTTP, real
sd_notify datagrams, real signals and real file edits."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization
from pki import TrustDomainCA, response, svid_message, with_foreign_key
from util import (
    REQUIRED_METRICS,
    TESTS,
    HelperProcess,
    env_without,
    free_port,
    leaf_serial,
    mode,
    read_certs,
    run_helper,
    serial_of,
    wait_for,
)

from helper import app
from helper._proto import workload_pb2
from helper.config import Config
from helper.devagent import AgentOptions, DevAgentThread

CONF = """\
agent_address = "{socket}"
cert_dir = "{cert_dir}"
svid_file_name = "{svid}"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
cert_file_mode = {cert_mode}
{extra}
health_checks {{
  listener_enabled = true
  bind_address = "127.0.0.1"
  bind_port = {port}
}}
"""
GO_READY_BODY = (b'{"status":"OK","health":{"file_write_statuses":'
                 b'{"x509_write_status":"written","jwt_write_status":{}}}}')
JWT_SHAPED = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+")


# --- fixtures and small helpers -------------------------------------------------------------


class Setup:
    """One helper's config file, written and rewritten by the test."""

    def __init__(self, tmp_path: Path, agent: DevAgentThread, certs: Path) -> None:
        self.path = tmp_path / "helper.conf"
        self.agent_socket = agent.socket_path
        self.certs = certs
        self.port = free_port()
        self.write()

    def text(self, *, svid: str = "svid.pem", cert_mode: str = "0644", extra: str = "",
             socket_path: str | None = None) -> str:
        return CONF.format(socket=socket_path or self.agent_socket, cert_dir=self.certs,
                           svid=svid, cert_mode=cert_mode, extra=extra, port=self.port)

    def write(self, **options: str) -> None:
        self.path.write_text(self.text(**options))

    def replace(self, **options: str) -> None:
        """Write a new version and rename it into place, as editors and deploy tools do."""
        temp = self.path.with_name(".helper.conf.new")
        temp.write_text(self.text(**options))
        os.replace(temp, self.path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def http(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def http_or_none(url: str) -> tuple[int, dict[str, str], bytes] | None:
    try:
        return http(url)
    except (urllib.error.URLError, ConnectionError):
        return None


def metric(setup: Setup, sample: str) -> float | None:
    answer = http_or_none(setup.url("/metrics"))
    if answer is None:
        return None
    for line in answer[2].decode().splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return None


def lines_with(helper: HelperProcess, text: str) -> list[str]:
    return [line for line in helper.output().splitlines() if text in line]


def start(setup: Setup, tmp_path: Path, *args: str, env: dict[str, str] | None = None,
          log: str = "helper.log") -> HelperProcess:
    return HelperProcess("-config", str(setup.path), *args, env=env, log=tmp_path / log)


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


# --- sd_notify -------------------------------------------------------------------------------


class NotifySocket:
    """What systemd would receive: datagrams on a socket bound in tmp, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[tuple[list[str], bool]] = []  # lines, files existed on arrival
        self.files: list[Path] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            exist = all(f.exists() for f in self.files)
            self.messages.append((data.decode().split("\n"), exist))

    def lines(self) -> list[str]:
        return [line for lines, _ in list(self.messages) for line in lines]

    def index(self, prefix: str, after: int = -1) -> int | None:
        """Position of the first line starting with `prefix` after position `after`."""
        for position, line in enumerate(self.lines()):
            if position > after and line.startswith(prefix):
                return position
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_sd_notify_messages_arrive_in_order(tmp_path, agent, certs):
    setup = Setup(tmp_path, agent, certs)
    notify = NotifySocket(tmp_path / "notify")
    notify.files = [certs / n for n in ("svid.pem", "svid_key.pem", "svid_bundle.pem")]
    env = env_without("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                      NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="200000")
    try:
        with start(setup, tmp_path, env=env) as helper:
            ready = wait_for(lambda: notify.index("READY=1"), what="READY=1")
            ready_message = next(m for m in notify.messages if "READY=1" in m[0])
            assert ready_message[1], "READY=1 came before the files were on disk"
            first = leaf_serial(certs / "svid.pem")
            status_line = next(line for line in notify.lines() if line.startswith("STATUS="))
            assert agent.spiffe_id in status_line
            assert f"{first:x}" in status_line
            pings = wait_for(lambda: notify.index("WATCHDOG=1", after=ready), what="WATCHDOG=1")

            serial = serial_of(agent.rotate())
            rotated = wait_for(lambda: notify.index(f"STATUS={agent.spiffe_id}: X.509-SVID on "
                                                    f"disk (serial {serial:x}", after=pings),
                               what="STATUS after rotation")

            helper.proc.send_signal(signal.SIGHUP)
            reloading = wait_for(lambda: notify.index("RELOADING=1", after=rotated),
                                 what="RELOADING=1")
            assert notify.lines()[reloading + 1].startswith("MONOTONIC_USEC=")
            reloaded = wait_for(lambda: notify.index("READY=1", after=reloading),
                                what="READY=1 after the reload")

            # the stream goes down: the watchdog pings stop until it is back
            agent.fail_next(1000, grpc.StatusCode.PERMISSION_DENIED, "agent restarting")
            agent.end_streams()
            down = wait_for(lambda: notify.index("STATUS=Workload API stream down",
                                                 after=reloaded), what="stream down")
            calls = agent.calls
            wait_for(lambda: agent.calls > calls, what="a retry while down", timeout=15)
            agent.fail_next(0, grpc.StatusCode.PERMISSION_DENIED)
            back = wait_for(lambda: notify.index(f"STATUS={agent.spiffe_id}", after=down),
                            what="stream healthy again", timeout=15)
            assert "WATCHDOG=1" not in notify.lines()[down:back]
            wait_for(lambda: notify.index("WATCHDOG=1", after=back), what="pings resume")

            assert helper.stop() == 0
        lines = notify.lines()
        assert lines[-2] == "STOPPING=1"
        assert lines[-1] == "STATUS=stopping (exit code 0)"
    finally:
        notify.close()


def test_notify_socket_is_not_passed_on_and_abstract_names_work(tmp_path, agent, certs):
    """An abstract socket (@name) works, and the variables leave the environment once read,
    so no process the helper starts talks to systemd in its name."""
    from helper.ops import sdnotify

    name = f"spiffe-helper-test-{os.getpid()}-{id(tmp_path)}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("\0" + name)
    receiver.settimeout(5)
    try:
        notifier = sdnotify.Notifier(sdnotify.socket_address("@" + name))
        assert notifier.send("READY=1", "STATUS=x")
        assert receiver.recv(100) == b"READY=1\nSTATUS=x"
        notifier.close()
    finally:
        receiver.close()
    environ = {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000", "PATH": "/bin"}

    core = app.build(Config(svid_file_name="s", svid_key_file_name="k",
                            svid_bundle_file_name="b"), environ=environ)
    attached = core.features[-1]  # sd_notify comes last (READY=1 after the others)
    assert isinstance(attached, sdnotify.SystemdNotify)
    assert attached.watchdog == 0.0005
    assert environ == {"PATH": "/bin"}
    assert attached in core.features  # its serve phase pings the watchdog
    attached.notifier.close()


# --- config reload ---------------------------------------------------------------------------


def test_sighup_with_a_new_output_name_writes_it_at_once_keeping_pid_and_stream(
        tmp_path, agent, certs):
    setup = Setup(tmp_path, agent, certs)
    with start(setup, tmp_path) as helper:
        first = wait_for(lambda: leaf_serial(certs / "svid.pem"), what="first write")
        agent.wait_streams(1)
        calls, pid = agent.calls, helper.proc.pid
        setup.write(svid="server.pem", cert_mode="0640", extra='log_level = "debug"')
        helper.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: leaf_serial(certs / "server.pem") == first, what="new file name")
        assert mode(certs / "server.pem") == 0o640
        assert lines_with(helper, "svid_file_name, cert_file_mode, log_level changed")
        assert http(setup.url("/live"))[0] == 200
        wait_for(lambda: lines_with(helper, "DEBUG health: GET /live -> 200"),
                 what="the new log level in force")
        # same process, same stream: nothing was restarted or re-opened
        assert helper.proc.poll() is None
        assert helper.proc.pid == pid
        assert agent.calls == calls
        # the next rotation goes to the new name only
        serial = serial_of(agent.rotate())
        wait_for(lambda: leaf_serial(certs / "server.pem") == serial, what="rotation")
        assert leaf_serial(certs / "svid.pem") == first
        assert metric(setup, 'spiffe_helper_config_reloads_total{result="ok"}') == 1
        assert helper.stop() == 0
    # the supervised child keeps its PID too: see the next test


def recorded(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_sighup_reloads_the_config_keeps_the_child_and_forwards_hup_to_it(
        tmp_path, agent, certs):
    record = tmp_path / "child.jsonl"
    recorder = TESTS / "children" / "recorder.py"
    child = (f'cmd = "{sys.executable}"\ncmd_args = "{recorder} --record {record}"\n'
             'renew_signal = "SIGUSR1"')
    setup = Setup(tmp_path, agent, certs)
    setup.write(extra=child)
    with start(setup, tmp_path) as helper:
        first = wait_for(lambda: leaf_serial(certs / "svid.pem"), what="first write")
        ready = wait_for(lambda: [e for e in recorded(record) if e["event"] == "ready"],
                         what="child ready")
        child_pid = ready[0]["pid"]
        setup.write(svid="server.pem", extra=child)
        helper.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: leaf_serial(certs / "server.pem") == first, what="new file name")
        wait_for(lambda: [e for e in recorded(record) if e.get("name") == "SIGHUP"],
                 what="SIGHUP forwarded to the child")
        # the same child, never restarted, and it keeps getting renew_signal on rotation
        serial = serial_of(agent.rotate())
        wait_for(lambda: leaf_serial(certs / "server.pem") == serial, what="rotation")
        wait_for(lambda: [e for e in recorded(record) if e.get("name") == "SIGUSR1"],
                 what="renew signal after the reload")
        starts = [e for e in recorded(record) if e["event"] == "start"]
        assert [e["pid"] for e in starts] == [child_pid]
        assert helper.proc.poll() is None


def test_an_invalid_edit_is_logged_once_and_the_old_config_stays(tmp_path, agent, certs):
    setup = Setup(tmp_path, agent, certs)
    with start(setup, tmp_path) as helper:
        wait_for(lambda: leaf_serial(certs / "svid.pem"), what="first write")
        setup.path.write_text(setup.text(svid="other.pem") + 'svid_fil_name = "typo"\n')
        helper.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: metric(setup, 'spiffe_helper_config_reloads_total{result="failed"}')
                 == 1, what="failed reload counted")
        reload_lines = lines_with(helper, "config reload")
        assert len(reload_lines) == 1, reload_lines
        assert "refused" in reload_lines[0]
        assert "svid_fil_name" in reload_lines[0]
        assert "configuration in force stays" in reload_lines[0]
        # still running, still rotating, under the old names
        serial = serial_of(agent.rotate())
        wait_for(lambda: leaf_serial(certs / "svid.pem") == serial, what="rotation")
        assert not (certs / "other.pem").exists()
        assert helper.proc.poll() is None
        assert helper.stop() == 0


def test_watch_config_picks_up_edits_without_a_signal(tmp_path, agent, certs):
    setup = Setup(tmp_path, agent, certs)
    setup.write(extra="watch_config = true")
    with start(setup, tmp_path) as helper:
        serial = wait_for(lambda: leaf_serial(certs / "svid.pem"), what="first write")
        wait_for(lambda: lines_with(helper, "watch_config: watching"), what="watcher")
        setup.replace(svid="renamed-into-place.pem", extra="watch_config = true")
        wait_for(lambda: leaf_serial(certs / "renamed-into-place.pem") == serial,
                 what="edit renamed into place")
        setup.write(svid="edited-in-place.pem", extra="watch_config = true")
        wait_for(lambda: leaf_serial(certs / "edited-in-place.pem") == serial,
                 what="edit in place")
        assert lines_with(helper, "config reload (config file changed)")
        assert helper.proc.poll() is None
        assert helper.stop() == 0


def test_a_new_agent_address_reconnects_to_the_new_agent(tmp_path, agent, certs):
    setup = Setup(tmp_path, agent, certs)
    with DevAgentThread(AgentOptions(str(tmp_path / "agent2" / "api.sock"),
                                     spiffe_id="spiffe://example.org/moved")) as other, \
            start(setup, tmp_path) as helper:
        wait_for(lambda: leaf_serial(certs / "svid.pem"), what="first write")
        setup.write(socket_path=other.socket_path)
        helper.proc.send_signal(signal.SIGHUP)
        wanted = serial_of(other.current)
        wait_for(lambda: leaf_serial(certs / "svid.pem") == wanted, what="files from agent 2")
        assert lines_with(helper, "re-connecting")
        assert helper.stop() == 0


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
