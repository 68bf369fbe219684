"""Malformed messages (issue 8, item 3): one for every rule of shared/README section 2 and
helper/identity/x509.py. Each is refused and counted under its rule; the last good files stay
(bytes and inodes) and the stream stays open. The real CLI against the real dev-agent."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pki
from relutil import (
    consistent_serial,
    disk_state,
    health_block,
    refusals,
    refused_metric,
    serial_of,
    streaming,
    temps,
)
from util import HelperProcess, free_port, wait_for

from helper._proto import workload_pb2
from helper.devagent import AgentOptions, DevAgentThread
from helper.identity import x509 as validate

HINT = "main"
CA = pki.TrustDomainCA.create("example.org")
OTHER = pki.TrustDomainCA.create("other.org")
ID = CA.spiffe_id()


def _good_leaf(**options: object) -> pki.Issued:
    return CA.leaf(**options)  # type: ignore[arg-type]


def _svid(leaf: pki.Issued, chain_rest: list[pki.Issued] | None = None,
          bundle: list[pki.Issued] | None = None, **options: object
          ) -> workload_pb2.X509SVID:
    chain = [leaf, *(chain_rest if chain_rest is not None else [CA.intermediate])]
    return pki.svid_message(ID, chain, bundle if bundle is not None else [CA.root], hint=HINT,
                            **options)  # type: ignore[arg-type]


def _one(svid: workload_pb2.X509SVID, **federated: object) -> workload_pb2.X509SVIDResponse:
    return pki.response(svid, federated=federated or None)  # type: ignore[arg-type]


def _not_ca_intermediate() -> workload_pb2.X509SVIDResponse:
    fake = pki.make_intermediate(CA.root, cn="not a CA", ca=False, usage=pki.LEAF_USAGE)
    return _one(_svid(pki.make_leaf(fake, ID), [fake]))


def _intermediate_window(start_h: int, end_h: int) -> workload_pb2.X509SVIDResponse:
    now = pki.utcnow()
    inter = pki.make_intermediate(CA.root, not_before=now + timedelta(hours=start_h),
                                  not_after=now + timedelta(hours=end_h))
    return _one(_svid(pki.make_leaf(inter, ID), [inter]))


def _two_bundles() -> workload_pb2.X509SVIDResponse:
    first = _svid(_good_leaf())
    second = pki.svid_message(CA.spiffe_id("/second"), [CA.leaf("/second"), CA.intermediate],
                              [CA.root, OTHER.root])
    return pki.response(first, second)


# One hostile message per rule; built lazily so a failing builder names its rule.
BAD: dict[str, Callable[[], workload_pb2.X509SVIDResponse]] = {
    "no_svids": lambda: pki.response(),
    "spiffe_id": lambda: _one(pki.svid_message("spiffe://Example.org/workload",
                                               [_good_leaf(), CA.intermediate], [CA.root])),
    "der_parse": lambda: _one(workload_pb2.X509SVID(
        spiffe_id=ID, x509_svid=b"\x30\x82\x01\x00 garbage, not DER", x509_svid_key=b"\x00",
        bundle=CA.root.der, hint=HINT)),
    "leaf_one_uri_san": lambda: _one(_svid(_good_leaf(uris=[ID, CA.spiffe_id("/twin")]))),
    "leaf_uri_matches_spiffe_id": lambda: _one(_svid(_good_leaf(uris=[CA.spiffe_id("/x")]))),
    "leaf_not_ca": lambda: _one(_svid(_good_leaf(ca=True))),
    "leaf_key_usage": lambda: _one(_svid(_good_leaf(usage={"key_encipherment"}))),
    "intermediate_is_ca": _not_ca_intermediate,
    "key_matches_leaf": lambda: _one(_svid(_good_leaf(),
                                           key_der=pki.pkcs8_der(pki.new_key()))),
    "bundle_present": lambda: _one(_svid(_good_leaf(), bundle=[])),
    "leaf_not_yet_valid": lambda: _one(_svid(_good_leaf(
        not_before=pki.utcnow() + timedelta(minutes=10),
        not_after=pki.utcnow() + timedelta(hours=1)))),
    "leaf_expired": lambda: _one(_svid(_good_leaf(
        not_before=pki.utcnow() - timedelta(hours=2),
        not_after=pki.utcnow() - timedelta(minutes=10)))),
    "intermediate_not_yet_valid": lambda: _intermediate_window(1, 3),
    "intermediate_expired": lambda: _intermediate_window(-3, -1),
    # a chain from another CA that claims our trust domain
    "chain_verifies": lambda: _one(pki.svid_message(
        ID, [pki.make_leaf(OTHER.intermediate, ID), OTHER.intermediate], [CA.root], hint=HINT)),
    "bundle_consistent": _two_bundles,
    # (a bad federated bundle is no longer a refusal: tests/reliability/test_federation.py)
    "hint_not_found": lambda: pki.response(CA.svid(hint="not-" + HINT)),
}


def validator_rules() -> set[str]:
    """Every rule name helper/identity/x509.py can refuse with."""
    source = Path(validate.__file__).read_text()
    return set(re.findall(r'(?:Refused|NotYetValid)\(\s*"(\w+)"', source))


def test_every_validator_rule_has_a_hostile_message() -> None:
    assert validator_rules() == set(BAD)


def log_agrees_with_metrics(helper: HelperProcess, port: int) -> dict[str, int]:
    """The refused-messages count per rule from /metrics, once the log says the same."""
    return wait_for(lambda: (counted := refused_metric(port)) == refusals(helper.output())
                    and counted, 5, "the log to agree with /metrics")


def test_every_malformed_message_is_refused_counted_and_the_files_and_stream_stay(
        tmp_path: Path, certs: Path) -> None:
    with DevAgentThread(AgentOptions(str(tmp_path / "agent" / "api.sock"), hint=HINT)) as agent:
        port = free_port()
        with streaming(tmp_path, agent, certs, f'hint = "{HINT}"\n' + health_block(port),
                       "--log-level", "debug") as (helper, before, calls):
            for n, (rule, build) in enumerate(BAD.items(), start=1):
                agent.push(build())
                wait_for(lambda r=rule: refused_metric(port).get(r) == 1, 10,
                         f"the refusal under rule {rule}")
                counted = log_agrees_with_metrics(helper, port)
                assert sum(counted.values()) == n, (rule, helper.output())
                assert disk_state(certs) == before, rule
                assert temps(certs) == [], rule
                assert agent.calls == calls, rule  # the stream was kept
                assert helper.proc.poll() is None, helper.output()
            assert log_agrees_with_metrics(helper, port) == dict.fromkeys(BAD, 1)
            # the same stream still delivers the next good identity
            good = agent.rotate()
            wait_for(lambda: consistent_serial(certs) == serial_of(good), 10, "next rotation")
            assert agent.calls == calls
            assert log_agrees_with_metrics(helper, port) == dict.fromkeys(BAD, 1)
            assert "Traceback" not in helper.output()
            assert helper.stop() == 0


def _malformed_san_extension() -> workload_pb2.X509SVIDResponse:
    """A leaf whose subjectAltName extension holds a SET where a SEQUENCE belongs: the
    certificate loads, but reading its extensions fails (found by test_properties)."""
    der = bytearray(_good_leaf().der)
    oid = der.index(bytes.fromhex("0603551d11"))  # OID 2.5.29.17, subjectAltName
    octets = oid + 5
    assert der[octets] == 0x04  # the extension's OCTET STRING (not critical: no BOOLEAN)
    assert der[octets + 2] == 0x30
    der[octets + 2] = 0x31
    svid = _svid(_good_leaf())
    svid.x509_svid = bytes(der) + CA.intermediate.der
    return _one(svid)


def test_a_certificate_whose_extensions_cannot_be_parsed_is_refused_not_a_crash(
        tmp_path: Path, certs: Path) -> None:
    with DevAgentThread(str(tmp_path / "agent" / "api.sock")) as agent, \
            streaming(tmp_path, agent, certs) as (helper, before, calls):
        agent.push(_malformed_san_extension())
        wait_for(lambda: refusals(helper.output()) or helper.proc.poll() is not None, 10,
                 "a refusal")
        assert helper.proc.poll() is None, helper.output()
        assert refusals(helper.output()) == {"der_parse": 1}
        assert disk_state(certs) == before
        good = agent.rotate()
        wait_for(lambda: consistent_serial(certs) == serial_of(good), 10, "next rotation")
        assert agent.calls == calls
        assert helper.stop() == 0
