"""Federation between two real SPIRE servers (case 5 of the interop issue): b.test's bundle
set on a.test with `bundle set -format spiffe`, the workload's entry `-federatesWith` it;
then de-federation with `bundle delete -mode dissociate`. Assertions on the files."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from cryptography import x509
from spiffe_formats import bundle_map_certificates
from spire import X509_FILES, Spire, check_x509_files, helper_conf, load_certs, spire, spire_server
from util import HelperProcess, wait_for

# SPIRE starts within the first test of a module: a longer timeout than the default.
pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def federated() -> Iterator[tuple[Spire, list[x509.Certificate]]]:
    with spire("a.test", prefix="fa-") as a, spire_server("b.test", prefix="fb-") as b:
        a.server.set_federated_bundle("b.test", b.bundle_spiffe())
        a.entry("/workload", x509_ttl=20, federates_with=["spiffe://b.test"])
        a.agent.wait_serving(["spiffe://a.test/workload"])
        roots_b = x509.load_pem_x509_certificates(b.cmd("bundle", "show").stdout.encode())
        yield a, roots_b


@pytest.mark.timeout(120)
def test_federated_ca_reaches_every_output_and_leaves_on_defederation(federated, tmp_path):
    a, roots_b = federated
    out = tmp_path / "out"
    (out / "cf").mkdir(parents=True)
    conf = helper_conf(tmp_path / "helper.conf", a.socket, out, **X509_FILES,
                       include_federated_domains=True, credential_folder="cf",
                       spiffe_bundle_map_file_name="map.json")
    bundle, folder_b = out / "svid_bundle.pem", out / "cf" / "b.test.spiffe-trust-bundle.x509.pem"
    roots_a = x509.load_pem_x509_certificates(a.server.cmd("bundle", "show").stdout.encode())

    def has_b() -> bool:
        return folder_b.exists() and set(roots_b) <= set(load_certs(bundle))

    with HelperProcess("-config", str(conf), log=tmp_path / "helper.log") as helper:
        wait_for(has_b, 40, what="b.test's CA in the bundle file and the credential folder")
        check_x509_files(out, "spiffe://a.test/workload")
        # Own authorities first, then the federated ones (Go's order).
        assert load_certs(bundle) == roots_a + roots_b
        assert load_certs(folder_b) == roots_b
        assert load_certs(out / "cf" / "a.test.spiffe-trust-bundle.x509.pem") == roots_a
        bundle_map = bundle_map_certificates((out / "map.json").read_bytes())
        assert bundle_map == {"a.test": roots_a, "b.test": roots_b}

        a.server.delete_federated_bundle("b.test")

        def defederated() -> bool:
            return (load_certs(bundle) == roots_a and folder_b.read_bytes() == b""
                    and "b.test" not in json.loads((out / "map.json").read_text())
                    ["trust_domains"])

        # The project's documented rule: the trust domain's credential-folder file is
        # redacted (written empty), the bundle file and the bundle map drop it.
        wait_for(defederated, 40, what="b.test gone from every output")
        check_x509_files(out, "spiffe://a.test/workload")
        assert helper.proc.poll() is None
