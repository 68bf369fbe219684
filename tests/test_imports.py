"""The one-shot path imports only what it needs (README "Performance"), and neither the
one-shot nor the daemon path ever imports grpcio (the client is grpclib; grpcio only serves
the API, in the dev-agent and `demo`).

Runs the real CLI with `python -X importtime` against the dev-agent and reads which
modules were imported. Nothing here is timed.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from util import wait_for

# Modules the one-shot run must not load: daemon-only features, test and dev tooling.
NOT_ON_THE_ONE_SHOT_PATH = ("watchdog", "psutil", "http.server", "helper.devagent",
                            "hypothesis", "tomllib", "grpc",
                            # daemon-only features (helper/app.py `build`)
                            "helper.supervise.supervisor", "helper.supervise.reaper",
                            "helper.ops.health", "helper.ops.metrics", "helper.config.watch",
                            "helper.config.reload_plan", "helper.ops.sdnotify",
                            "helper.ops.expiry", "ctypes",
                            # the reference table is for check-config and the docs tool
                            "helper.config.reference",
                            # JWT code: only for a config that fetches JWTs
                            "helper.outputs.jwt_pipeline", "helper.identity.jwt",
                            "helper.identity.jwks",
                            # formats the config does not ask for (helper/outputs/formats.py)
                            "cryptography.hazmat.primitives.serialization.pkcs12")
# Only for a helper that supervises something (cmd, pid_file_name, reload_cmd, PID 1).
ONLY_WHEN_SUPERVISING = ("ctypes",)
# Modules no helper run loads: grpcio (its core's threads wake an idle daemon ~15 times a
# second, issue 13) and everything that only serves the API.
NEVER_IN_THE_HELPER = ("grpc", "helper.devagent", "helper._proto.workload_pb2_grpc")

_IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$", re.MULTILINE)


def imported_modules(stderr: str) -> set[str]:
    return set(_IMPORTED.findall(stderr))


def test_one_shot_imports_no_daemon_or_dev_modules(tmp_path, agent):
    certs = tmp_path / "certs"
    certs.mkdir()
    config = tmp_path / "helper.conf"
    config.write_text(f'agent_address = "{agent.socket_path}"\ncert_dir = "{certs}"\n'
                      'svid_file_name = "svid.pem"\nsvid_key_file_name = "key.pem"\n'
                      'svid_bundle_file_name = "bundle.pem"\n')
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "helper", "-config",
                           str(config), "-daemon-mode=false"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert (certs / "key.pem").is_file()
    modules = imported_modules(done.stderr)
    assert "helper.app" in modules  # the parse found the run's imports
    loaded = sorted(m for m in modules for bad in NOT_ON_THE_ONE_SHOT_PATH
                    if m == bad or m.startswith(bad + "."))
    assert loaded == []


def loaded_of(modules: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules for bad in banned if m == bad or m.startswith(bad + "."))


def test_a_daemon_never_imports_grpcio(tmp_path: Path, agent) -> None:
    """The daemon, with X.509 and JWT outputs, health and metrics, through a rotation and
    a config reload: grpclib and the protobuf messages, never grpcio; and at most two
    threads (the event loop and the one worker that writes files) once idle."""
    certs = tmp_path / "certs"
    certs.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "helper.conf"
    config.write_text(f'agent_address = "{agent.socket_path}"\ncert_dir = "{certs}"\n'
                      'svid_file_name = "svid.pem"\nsvid_key_file_name = "key.pem"\n'
                      'svid_bundle_file_name = "bundle.pem"\n'
                      'jwt_bundle_file_name = "jwt_bundle.json"\n'
                      'jwt_svids = [{jwt_audience = "aud", jwt_svid_file_name = "jwt.token"}]\n'
                      'health_checks {\n  listener_enabled = true\n'
                      f'  bind_port = {port}\n}}\n')
    log = tmp_path / "helper.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "helper", "-config",
                                 str(config)], stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: (certs / "jwt.token").is_file() and (certs / "key.pem").is_file(),
                     20, "the first writes")
            serial = (certs / "svid.pem").read_bytes()
            agent.rotate()
            wait_for(lambda: (certs / "svid.pem").read_bytes() != serial, 20, "the rotation")
            proc.send_signal(signal.SIGHUP)  # a config reload
            wait_for(lambda: "config reload (" in log.read_text(errors="replace"), 20,
                     "the reload")
            # idle after all that work (writes, validation, a reload off the event loop):
            # the event loop and one worker thread, nothing else (issue 13: <= 2 threads)
            threads = sorted(p.name for p in Path(f"/proc/{proc.pid}/task").iterdir())
            assert len(threads) <= 2, threads
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0, log.read_text(errors="replace")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    modules = imported_modules(log.read_text(errors="replace"))
    assert "helper.app" in modules
    assert "grpclib.client" in modules
    assert loaded_of(modules, NEVER_IN_THE_HELPER) == []
    # nothing to supervise here (no cmd, pid_file_name or reload_cmd)
    assert loaded_of(modules, ONLY_WHEN_SUPERVISING) == []
