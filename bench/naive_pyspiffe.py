"""The naive alternative (standalone script): a few lines of py-spiffe that fetch once.

    SPIFFE_ENDPOINT_SOCKET=unix:///path python naive_pyspiffe.py OUT_DIR

Writes svid.pem, svid_key.pem and svid_bundle.pem, as an entrypoint without the helper
would: no validation beyond py-spiffe's parsing, no atomic replacement, no fsync.
"""

import os
import sys

from cryptography.hazmat.primitives.serialization import Encoding
from spiffe import WorkloadApiClient

out = sys.argv[1]
with WorkloadApiClient() as client:  # reads SPIFFE_ENDPOINT_SOCKET
    context = client.fetch_x509_context()
    svid = context.default_svid
    svid.save(os.path.join(out, "svid.pem"), os.path.join(out, "svid_key.pem"), Encoding.PEM)
    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    if bundle is None:
        raise SystemExit("no bundle for the SVID's trust domain")
    bundle.save(os.path.join(out, "svid_bundle.pem"), Encoding.PEM)
