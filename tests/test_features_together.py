"""Features from different parts of the helper working together through the real CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from util import HelperProcess, leaf_serial, wait_for

from helper.devagent import AgentOptions, DevAgentThread

RECORDER = Path(__file__).parent / "children" / "recorder.py"


@pytest.fixture
def agent(tmp_path):
    with DevAgentThread(AgentOptions(str(tmp_path / "agent" / "api.sock"), jwt_ttl=300)) as a:
        yield a


def events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_cmd_sees_the_credential_folder_and_starts_after_it_is_written(tmp_path, agent):
    certs = tmp_path / "certs"
    folder = certs / "credentials"
    folder.mkdir(parents=True)
    record = tmp_path / "child.jsonl"
    conf = tmp_path / "helper.conf"
    conf.write_text(
        f'agent_address = "{agent.socket_path}"\n'
        f'cert_dir = "{certs}"\n'
        'svid_file_name = "svid.pem"\nsvid_key_file_name = "key.pem"\n'
        'svid_bundle_file_name = "bundle.pem"\n'
        'credential_folder = "credentials"\n'
        f'cmd = "{sys.executable}"\n'
        f'cmd_args = "{RECORDER} --record {record} --env SPIFFE_CREDENTIAL_FOLDER '
        f'--cert {certs}/svid.pem"\n'
        'renew_signal = "SIGUSR1"\n')
    with HelperProcess("-config", str(conf), log=tmp_path / "helper.log"):
        start = wait_for(lambda: [e for e in events(record) if e["event"] == "start"],
                         what="child start")[0]
        assert start["cert_exists"] is True
        assert start["env"]["SPIFFE_CREDENTIAL_FOLDER"] == str(folder)
        assert any(p.name.startswith("credential-bundle") for p in folder.iterdir())


def test_jwt_only_config_starts_cmd_after_the_token_is_written(tmp_path, agent):
    certs = tmp_path / "certs"
    certs.mkdir()
    record = tmp_path / "child.jsonl"
    conf = tmp_path / "helper.conf"
    conf.write_text(
        f'agent_address = "{agent.socket_path}"\n'
        f'cert_dir = "{certs}"\n'
        'jwt_svids = [{jwt_audience = "db", jwt_svid_file_name = "db.token"}]\n'
        'jwt_bundle_file_name = "jwt_bundle.json"\n'
        f'cmd = "{sys.executable}"\n'
        f'cmd_args = "{RECORDER} --record {record} --cert {certs}/db.token"\n')
    with HelperProcess("-config", str(conf), log=tmp_path / "helper.log") as helper:
        start = wait_for(lambda: [e for e in events(record) if e["event"] == "start"],
                         what="child start")[0]
        assert start["cert_exists"] is True
        assert (certs / "jwt_bundle.json").exists()
        assert not (certs / "svid.pem").exists()
        assert leaf_serial(certs / "svid.pem") is None
        assert helper.proc.poll() is None
