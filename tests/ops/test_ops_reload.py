"""Operations end to end: config reload on SIGHUP, real file edits and the file watcher."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from ops_setup import Setup, http, lines_with, metric, start
from util import (
    TESTS,
    leaf_serial,
    mode,
    serial_of,
    wait_for,
)

from helper.devagent import AgentOptions, DevAgentThread

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
