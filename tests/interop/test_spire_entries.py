"""What a SPIRE operator does under a running helper (case 7 of the interop issue): the
entry deleted (the agent stops serving it), re-created, and the agent restarted."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest
from spire import X509_FILES, Spire, check_x509_files, out_and_conf, spire
from util import HelperProcess, free_port, leaf_serial, wait_for

# SPIRE starts within the first test of a module: a longer timeout than the default.
pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]
ID = "spiffe://a.test/workload"


@pytest.fixture(scope="module")
def sp() -> Iterator[Spire]:
    with spire("a.test", prefix="se-") as s:
        yield s


def _status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
        return json.loads(response.read())


def _stream_healthy(port: int) -> bool:
    return bool(_status(port)["workload_api"]["stream_healthy"])


@pytest.mark.timeout(180)
def test_entry_deleted_recreated_and_agent_restarted(sp, tmp_path):
    entry = sp.entry("/workload", x509_ttl=30)
    sp.agent.wait_serving([ID])
    port = free_port()
    out, conf = out_and_conf(tmp_path, sp.socket, **X509_FILES,
                             health_checks={"listener_enabled": True,
                                            "bind_address": "127.0.0.1", "bind_port": port})
    svid = out / "svid.pem"
    with HelperProcess("-config", str(conf), log=tmp_path / "helper.log") as helper:
        wait_for(lambda: leaf_serial(svid), 30, what="first SVID written")
        wait_for(lambda: _stream_healthy(port), 10, what="stream healthy")

        # Deleted: the agent stops serving the workload; the helper keeps the files and
        # says the Workload API stream is down.
        sp.server.delete_entry(entry)
        sp.agent.wait_serving([])
        wait_for(lambda: not _stream_healthy(port), 30, what="health: stream down")
        kept = {name: (out / name).read_bytes() for name in X509_FILES.values()}
        leaf, _ = check_x509_files(out, ID)
        assert helper.proc.poll() is None, helper.output()

        # Re-created: written again (a new SVID), stream healthy again.
        sp.entry("/workload", x509_ttl=30)
        wait_for(lambda: leaf_serial(svid) not in (None, leaf.serial_number), 40,
                 what="SVID of the re-created entry written")
        check_x509_files(out, ID)
        assert (out / "svid.pem").read_bytes() != kept["svid.pem"]
        wait_for(lambda: _stream_healthy(port), 10, what="stream healthy again")

        # Agent restarted: the helper reconnects, does not crash, keeps its files, and
        # writes what the new agent serves.
        sp.agent.restart()
        check_x509_files(out, ID)
        wait_for(lambda: _stream_healthy(port), 40, what="stream healthy after agent restart")
        serial = leaf_serial(svid)
        wait_for(lambda: leaf_serial(svid) not in (None, serial), 60,
                 what="a rotation written after the agent restart")
        check_x509_files(out, ID)
        assert helper.proc.poll() is None, helper.output()
