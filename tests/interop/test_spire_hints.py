"""Two SPIRE entries for the same workload told apart by `-hint` (case 6 of the interop
issue): `hint` picks the right identity; `x509_svids` writes both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from spire import X509_FILES, Spire, check_x509_files, helper_conf, spire
from util import run_helper

# SPIRE starts within the first test of a module: a longer timeout than the default.
pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def sp() -> Iterator[Spire]:
    with spire("a.test", prefix="sh-") as s:
        s.entry("/front", hint="external")
        s.entry("/back", hint="internal")
        s.agent.wait_serving(["spiffe://a.test/front", "spiffe://a.test/back"])
        yield s


@pytest.mark.parametrize(("hint", "path"), [("internal", "/back"), ("external", "/front")])
def test_hint_picks_the_identity(sp, tmp_path, hint, path):
    conf = helper_conf(tmp_path / "helper.conf", sp.socket, tmp_path, **X509_FILES, hint=hint)
    result = run_helper("-config", str(conf), "-daemon-mode=false", timeout=60)
    assert result.returncode == 0, result.stderr
    check_x509_files(tmp_path, f"spiffe://a.test{path}")


def test_x509_svids_writes_both_identities(sp, tmp_path):
    both = [{"hint": hint, "svid_file_name": f"{hint}.pem",
             "svid_key_file_name": f"{hint}_key.pem",
             "svid_bundle_file_name": f"{hint}_bundle.pem"} for hint in ("internal", "external")]
    conf = helper_conf(tmp_path / "helper.conf", sp.socket, tmp_path, x509_svids=both)
    result = run_helper("-config", str(conf), "-daemon-mode=false", timeout=60)
    assert result.returncode == 0, result.stderr
    for entry, path in zip(both, ("/back", "/front"), strict=True):
        names = {k: v for k, v in entry.items() if k != "hint"}
        check_x509_files(tmp_path, f"spiffe://a.test{path}", names)
