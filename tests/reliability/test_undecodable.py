"""A Workload API message that cannot be decoded (issue 12, item 1), on every stream the
helper opens: X.509-SVIDs, JWT bundles and the FetchJWTSVID answer.

Each is a refused message: logged once, counted in `refused_messages_total` (rule
`undecodable_message`), the stream restarted with backoff; the last good files stay and
the supervised child keeps running (no restart, no signal). The real CLI against the real
dev-agent, which sends bytes that are not a valid protobuf.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from relutil import (
    RECORDER,
    RETRYING,
    cmd_lines,
    consistent_serial,
    disk_state,
    first_write,
    health_block,
    records,
    refused_metric,
    serial_of,
    temps,
    write_conf,
)
from util import HelperProcess, free_port, wait_for

from helper.devagent import DevAgentThread

NOT_PROTOBUF = {
    "invalid UTF-8 in a string field": b"\x0a\x04\x0a\x02\xff\xfe",
    "a truncated varint": b"\x08\xff",
}
RULE = "undecodable_message"
REFUSED_LINE = re.compile(r"refused (?:message|JWT-SVID answer for audience \S+) "
                          r"\(rule undecodable_message\)")
JWT_CONF = """\
jwt_bundle_file_name = "jwt_bundle.json"
jwt_svids = [{jwt_audience = "aud", jwt_svid_file_name = "jwt.token"}]
"""


def _files(certs: Path) -> dict[str, tuple[bytes, int]]:
    state = disk_state(certs)
    for name in ("jwt_bundle.json", "jwt.token"):
        path = certs / name
        state[name] = (path.read_bytes(), path.stat().st_ino)
    return state


def _refused_lines(helper: HelperProcess) -> int:
    return len(REFUSED_LINE.findall(helper.output()))


@pytest.mark.parametrize("data", NOT_PROTOBUF.values(), ids=NOT_PROTOBUF.keys())
def test_undecodable_messages_on_every_stream_are_refused_and_the_streams_restarted(
        tmp_path: Path, certs: Path, agent: DevAgentThread, data: bytes) -> None:
    port = free_port()
    rec = tmp_path / "child.jsonl"
    conf = write_conf(tmp_path, agent.socket_path, certs,
                      JWT_CONF + health_block(port) + cmd_lines(RECORDER, "--record", str(rec)))
    agent.push_raw(data, "jwt_svid")  # the helper's first FetchJWTSVID gets it
    with HelperProcess("-config", str(conf), log=tmp_path / "helper.log") as helper:
        first_write(certs)
        wait_for(lambda: (certs / "jwt.token").is_file(), 15, "the JWT-SVID after a retry")
        wait_for(lambda: records(rec, "ready"), 15, "the child")
        assert refused_metric(port) == {RULE: 1}
        assert _refused_lines(helper) == 1
        before = _files(certs)

        # the X.509 stream: the agent keeps sending it to each restarted stream
        agent.push_raw(data, "x509")
        wait_for(lambda: refused_metric(port).get(RULE, 0) >= 3, 20, "two restarts")
        assert _files(certs) == before
        good = agent.rotate()
        wait_for(lambda: consistent_serial(certs) == serial_of(good), 20, "the next rotation")
        x509_refused = refused_metric(port)[RULE]

        # the JWT bundle stream
        jwt_bundle = (certs / "jwt_bundle.json").read_bytes()
        agent.push_raw(data, "jwt_bundles")
        wait_for(lambda: refused_metric(port)[RULE] >= x509_refused + 2, 20, "a restart")
        assert (certs / "jwt_bundle.json").read_bytes() == jwt_bundle
        agent.rotate_jwt_key()
        wait_for(lambda: (certs / "jwt_bundle.json").read_bytes() != jwt_bundle, 20,
                 "the next JWT bundle")

        output = helper.output()
        assert helper.proc.poll() is None, output
        assert "Traceback" not in output
        # logged once each: one line per refused message, as many as counted
        assert _refused_lines(helper) == refused_metric(port)[RULE]
        delays = [float(d) for d in RETRYING.findall(output)]
        assert delays
        assert min(delays) >= 0.7, delays  # with backoff, never a spin
        # the child was started once and never signalled
        assert len(records(rec, "start")) == 1
        assert records(rec, "signal") == []
        assert helper.stop() == 0
    assert temps(certs) == []
