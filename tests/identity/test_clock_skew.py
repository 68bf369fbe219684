"""Clock skew: one allowance for X.509 notBefore and JWT nbf, and a not-yet-valid newest
message is written once it is valid (issue 12, item 6)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pki
import pytest
from util import BASE_CONF, HelperProcess, leaf_serial, wait_for

from helper import config
from helper._proto import workload_pb2
from helper.devagent import DevAgentThread
from helper.errors import Refused
from helper.identity.jwt import check_nbf
from helper.identity.x509 import validate_x509_response

CA = pki.TrustDomainCA.create("example.org")
ID = CA.spiffe_id("/workload")


def starting_in(seconds: float, ca: pki.TrustDomainCA = CA,
                spiffe_id: str = ID) -> workload_pb2.X509SVIDResponse:
    now = datetime.now(timezone.utc)
    path = spiffe_id.split(ca.name, 1)[1]
    leaf = ca.leaf(path, not_before=now + timedelta(seconds=seconds),
                   not_after=now + timedelta(hours=1))
    return pki.response(pki.svid_message(spiffe_id, [leaf, ca.intermediate], [ca.root]))


def serial(message: workload_pb2.X509SVIDResponse) -> int:
    return validate_x509_response(message, skew=timedelta(days=1)).default.leaf.serial_number


def test_one_key_sets_the_allowance_for_x509_and_jwt():
    key = next(k for k in config.CONFIG_KEYS if k.name == "clock_skew")
    assert key.default == 60.0
    assert config.Config().clock_skew == 60.0
    # X.509: 30 s ahead passes with the default, 90 s does not
    validate_x509_response(starting_in(30))
    with pytest.raises(Refused) as refused:
        validate_x509_response(starting_in(90))
    assert refused.value.rule == "leaf_not_yet_valid"
    validate_x509_response(starting_in(90), skew=timedelta(seconds=120))
    # JWT: the same allowance
    nbf = {"nbf": int(time.time()) + 90}
    with pytest.raises(Refused):
        check_nbf(nbf, datetime.now(timezone.utc), timedelta(seconds=60))
    check_nbf(nbf, datetime.now(timezone.utc), timedelta(seconds=120))


def test_the_key_is_in_the_reference():
    assert "`clock_skew`" in config.reference_table_markdown()


CONF = BASE_CONF + """\
clock_skew = 1
"""


def start(tmp_path: Path, agent: DevAgentThread, certs: Path) -> HelperProcess:
    path = tmp_path / "helper.conf"
    path.write_text(CONF.format(socket=agent.socket_path, cert_dir=certs))
    return HelperProcess("-config", str(path), log=tmp_path / "helper.log")


def test_a_not_yet_valid_newest_message_is_written_when_it_becomes_valid(tmp_path, agent,
                                                                         certs):
    with start(tmp_path, agent, certs) as helper:
        first = wait_for(lambda: leaf_serial(certs / "svid.pem"), what="first write")
        ca = pki.TrustDomainCA.create("example.org")
        early = starting_in(4, ca, agent.spiffe_id)  # valid (with 1 s skew) in about 3 s
        valid_from = validate_x509_response(early, skew=timedelta(days=1)).default.leaf \
            .not_valid_before_utc - timedelta(seconds=1)
        agent.push(early)
        wait_for(lambda: "leaf_not_yet_valid" in helper.output(), what="the refusal")
        assert leaf_serial(certs / "svid.pem") == first
        wait_for(lambda: leaf_serial(certs / "svid.pem") == serial(early), timeout=15,
                 what="the kept message written once valid")
        assert datetime.now(timezone.utc) >= valid_from  # not before its moment
        assert "is kept" in helper.output()
        assert helper.stop() == 0


def test_a_newer_message_wins_over_a_kept_one(tmp_path, agent, certs):
    with start(tmp_path, agent, certs) as helper:
        wait_for(lambda: leaf_serial(certs / "svid.pem"), what="first write")
        ca = pki.TrustDomainCA.create("example.org")
        early = starting_in(4, ca, agent.spiffe_id)
        valid = time.monotonic() + 3  # with the 1 s allowance
        agent.push(early)
        wait_for(lambda: "is kept" in helper.output(), what="the message kept")
        newer = agent.rotate()
        wait_for(lambda: leaf_serial(certs / "svid.pem") == serial(newer), what="newer written")
        # past the moment the kept one became valid (and a margin), the newer one stays
        wait_for(lambda: time.monotonic() > valid + 1, what="the kept one's moment")
        assert leaf_serial(certs / "svid.pem") == serial(newer)
        assert "writing it" not in helper.output()
        assert helper.stop() == 0
