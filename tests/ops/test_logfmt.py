"""`log_format = "logfmt"` (issue 16, item 9), through the real CLI: lines in the Go
helper's logrus shape, with the Go helper's msg text for the events both tools log."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from util import ROOT, HelperProcess, run_helper, wait_for

from helper.ops.golog import GO_EVENTS, value_text

LINE = re.compile(r'^time="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ" level=(debug|info|warning|error) '
                  r'msg=(\S+|"(?:[^"\\]|\\.)*")((?: [a-z_]+=(?:[^\s"]+|"(?:[^"\\]|\\.)*"))*)$')
PAIR = re.compile(r'([a-z_]+)=([^\s"]+|"(?:[^"\\]|\\.)*")')


def parse(line: str) -> dict[str, str]:
    match = LINE.match(line)
    assert match, f"not a logfmt line: {line!r}"
    fields = {k: json.loads(v) if v.startswith('"') else v for k, v in PAIR.findall(line)}
    assert list(fields)[:3] == ["time", "level", "msg"]
    rest = list(fields)[3:]
    assert rest == sorted(rest), line  # logrus sorts the keys after msg
    assert fields["system"] == "spiffe-helper"
    return fields


def parse_all(text: str) -> list[dict[str, str]]:
    return [parse(line) for line in text.splitlines() if line]


def conf(tmp_path: Path, socket: str, certs: Path, extra: str = "") -> Path:
    path = tmp_path / "helper.conf"
    path.write_text(f'agent_address = "{socket}"\ncert_dir = "{certs}"\n'
                    'svid_file_name = "svid.pem"\nsvid_key_file_name = "svid_key.pem"\n'
                    'svid_bundle_file_name = "svid_bundle.pem"\nlog_format = "logfmt"\n'
                    + extra)
    return path


def test_daemon_lines_carry_the_go_texts_for_shared_events(tmp_path, agent, certs):
    path = conf(tmp_path, agent.socket_path, certs)
    with HelperProcess("-config", str(path), log=tmp_path / "helper.log") as helper:
        wait_for(lambda: "X.509 certificates updated" in helper.output(), timeout=30,
                 what="first write")
        agent.rotate()
        wait_for(lambda: helper.output().count("X.509 certificates updated") == 2,
                 timeout=30, what="rotation")
        helper.stop()
    lines = parse_all(helper.output())
    by_msg: dict[str, list[dict[str, str]]] = {}
    for fields in lines:
        by_msg.setdefault(fields["msg"], []).append(fields)
    assert by_msg["Launching daemon"][0]["address"] == f"unix://{agent.socket_path}"
    received = by_msg["Received update"]
    assert len(received) == 2
    assert {f["spiffe_id"] for f in received} == {agent.spiffe_id}
    assert all(f["level"] == "info" for f in received)
    updated = by_msg["X.509 certificates updated"]
    assert updated[0]["files"] == "3"  # the bundle is unchanged by a rotation
    assert updated[0]["serial"] != updated[1]["serial"]
    assert "BEGIN" not in helper.output()  # no key material, whatever the format


def test_a_write_error_is_go_s_unable_to_dump_bundle_with_the_error_field(tmp_path, agent,
                                                                          certs):
    path = tmp_path / "helper.conf"
    path.write_text(f'agent_address = "{agent.socket_path}"\ncert_dir = "{certs}"\n'
                    'svid_file_name = "gone/svid.pem"\nsvid_key_file_name = "gone/key.pem"\n'
                    'svid_bundle_file_name = "gone/bundle.pem"\ndaemon_mode = false\n')
    result = run_helper("-config", str(path), "-log-format", "logfmt")
    assert result.returncode == 1
    lines = parse_all(result.stderr)
    (dump,) = [f for f in lines if f["msg"] == "Unable to dump bundle"]
    assert dump["level"] == "error"
    assert "(ENOENT)" in dump["error"]
    assert str(certs / "gone" / "svid.pem") in dump["error"]


def test_no_agent_is_go_s_error_while_watching(tmp_path, certs):
    path = conf(tmp_path, str(tmp_path / "none.sock"), certs,
                "daemon_mode = false\nstartup_timeout = 2\n")
    result = run_helper("-config", str(path))
    assert result.returncode == 1
    lines = parse_all(result.stderr)
    watching = [f for f in lines if f["msg"].startswith("Error while watching x509 context: ")]
    assert watching
    assert "UNAVAILABLE" in watching[0]["msg"]
    assert watching[0]["retry_in"].endswith("s")


def test_values_are_quoted_as_logrus_quotes_them():
    assert value_text("spiffe-helper") == "spiffe-helper"
    assert value_text("a b") == '"a b"'
    assert value_text('say "x"') == '"say \\"x\\""'
    assert value_text("spiffe://x/y") == '"spiffe://x/y"'
    assert value_text(3) == "3"


def _log_formats() -> set[str]:
    """Every constant format string passed to log.debug/info/warning/error in helper/."""
    found = set()
    for source in (ROOT / "helper").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("debug", "info", "warning", "error")
                    and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                found.add(node.args[0].value)
    return found


def test_every_mapped_line_is_still_logged_by_the_helper():
    # a reworded log call would silently lose its Go text: fail instead
    formats = _log_formats()
    missing = [event.ours for event in GO_EVENTS if event.ours not in formats]
    assert not missing


def test_the_readme_lists_every_go_text():
    # the mapping table moved with the Logs section from README.md to docs/operations.md
    readme = (ROOT / "docs" / "operations.md").read_text()
    for event in GO_EVENTS:
        assert f"| `{event.go}` |" in readme
