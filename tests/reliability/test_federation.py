"""One federated trust domain cannot stop the workload's own rotations (issue 12, item 4).

SPIRE sends empty bytes for a federated trust domain without X.509 authorities: accepted
as "no authorities". A malformed federated bundle is dropped, logged and counted by trust
domain; the rest of the message, own SVID first, is written.
"""

from __future__ import annotations

from pathlib import Path

import pki
from relutil import health_block, metric_samples, write_conf
from util import HelperProcess, free_port, leaf_serial, wait_for

from helper._proto import workload_pb2
from helper.devagent import AgentOptions, DevAgentThread
from helper.identity.x509 import validate_x509_response
from helper.outputs.formats import trust_bundle_file_name

CA = pki.TrustDomainCA.create("example.org")
OTHER = pki.TrustDomainCA.create("other.org")


def with_federated(**bundles: bytes) -> workload_pb2.X509SVIDResponse:
    return pki.response(CA.svid(), federated={k.replace("_", "."): v for k, v in bundles.items()})


def test_an_empty_federated_bundle_is_a_trust_domain_without_authorities():
    snapshot = validate_x509_response(with_federated(empty_org=b"", other_org=OTHER.root.der))
    assert snapshot.federated == {"empty.org", "other.org"}
    assert snapshot.bundles["empty.org"] == ()
    assert snapshot.dropped == ()


def test_a_malformed_federated_bundle_is_dropped_and_the_rest_kept():
    message = pki.response(CA.svid(), federated={
        "bad.org": b"\x30\x03abc", "other.org": [OTHER.root], "Not A Domain": [OTHER.root],
        "example.org": [OTHER.root]})
    snapshot = validate_x509_response(message)
    assert snapshot.federated == {"other.org"}
    assert snapshot.default.spiffe_id == CA.svid().spiffe_id
    assert [key for key, _ in snapshot.dropped] == ["Not A Domain", "bad.org", "example.org"]
    assert all(reason for _, reason in snapshot.dropped)


def test_a_bad_federated_bundle_does_not_stop_the_own_rotation(tmp_path: Path, certs: Path):
    options = AgentOptions(str(tmp_path / "agent" / "api.sock"), federate=["other.org"])
    with DevAgentThread(options) as agent:
        port = free_port()
        folder = certs / "creds"
        folder.mkdir()
        conf = write_conf(tmp_path, agent.socket_path, certs,
                          'include_federated_domains = true\ncredential_folder = "creds"\n'
                          + health_block(port))
        with HelperProcess("-config", str(conf), log=tmp_path / "helper.log") as helper:
            wait_for(lambda: leaf_serial(certs / "svid.pem"), what="first write")
            # a new own SVID, next to a federated trust domain with no authorities and a
            # malformed one
            message = agent.rotate()
            message.federated_bundles["empty.org"] = b""
            message.federated_bundles["broken.org"] = b"\x30\x82\x01\x00 not DER"
            agent.push(message)
            serial = validate_x509_response(message).default.leaf.serial_number
            wait_for(lambda: (folder / trust_bundle_file_name("empty.org")).exists(),
                     what="the empty trust domain's bundle file")
            assert (folder / trust_bundle_file_name("empty.org")).read_bytes() == b""
            assert not (folder / trust_bundle_file_name("broken.org")).exists()
            assert (folder / trust_bundle_file_name("other.org")).read_bytes()
            assert leaf_serial(certs / "svid.pem") == serial
            dropped = wait_for(lambda: metric_samples(port, "federated_bundles_dropped_total"),
                               what="the dropped-bundle metric")
            assert dropped == {'{trust_domain="broken.org"}': 1.0}
            assert "refused X.509-SVID message" not in helper.output()
            assert "broken.org" in helper.output()
            assert helper.stop() == 0
