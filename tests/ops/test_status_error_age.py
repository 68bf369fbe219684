"""`spiffe-helper status` says when the last error happened and whether it is still
current (issue 16, item 8): after a reconnect an old error must not read as today's
problem. The real CLI, the real dev-agent failing the stream, the real health listener.
"""

from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timezone

import grpc
from util import HelperProcess, free_port, run_helper, wait_for


def status(port: int) -> tuple[int, str]:
    result = run_helper("status", "-url", f"http://127.0.0.1:{port}")
    return result.returncode, result.stdout


def doc(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
        return json.loads(response.read())


def test_status_shows_when_the_last_error_was_and_that_it_is_past(tmp_path, agent, certs):
    port = free_port()
    conf = tmp_path / "helper.conf"
    conf.write_text(f'agent_address = "{agent.socket_path}"\ncert_dir = "{certs}"\n'
                    'svid_file_name = "svid.pem"\nsvid_key_file_name = "svid_key.pem"\n'
                    'svid_bundle_file_name = "svid_bundle.pem"\n'
                    f'health_checks {{\n  listener_enabled = true\n  bind_address = "127.0.0.1"\n'
                    f'  bind_port = {port}\n}}\n')
    with HelperProcess("-config", str(conf), log=tmp_path / "helper.log"):
        _code, out = wait_for(lambda: (r := status(port))[0] == 0 and r, timeout=30,
                             what="ready")
        assert "last error" not in out
        assert doc(port)["last_error_current"] is None

        # the agent fails every call: the error is today's problem
        agent.fail_next(10_000, grpc.StatusCode.UNAVAILABLE, "agent restarting")
        before = datetime.now(timezone.utc).replace(microsecond=0)
        agent.end_streams()
        document = wait_for(lambda: (d := doc(port))["last_error_current"] is True and d,
                            timeout=30, what="current error")
        assert "agent restarting" in document["last_error"]
        at = datetime.fromisoformat(document["last_error_at"])
        assert before <= at <= datetime.now(timezone.utc)
        out = status(port)[1]
        assert "agent restarting" in out
        (row,) = [line for line in out.splitlines() if line.startswith("error at")]
        assert document["last_error_at"] in row
        assert " ago" in row
        assert "still current" in row

        # the agent is back: the helper reconnects and writes; the error is history
        agent.fail_next(0, grpc.StatusCode.UNAVAILABLE)
        wait_for(lambda: doc(port)["last_error_current"] is False, timeout=40,
                 what="error resolved after the reconnect")
        out = status(port)[1]
        (row,) = [line for line in out.splitlines() if line.startswith("error at")]
        assert "still current" not in row
        assert "past: the helper has recovered since" in row
        assert document["last_error_at"] in row  # the same error, with its own time
