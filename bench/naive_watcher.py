"""The naive daemon alternative (standalone script): py-spiffe watching X.509 contexts.

    SPIFFE_ENDPOINT_SOCKET=unix:///path python naive_watcher.py OUT_DIR

Writes svid.pem, svid_key.pem and svid_bundle.pem on every update, as a sidecar without
the helper would: no validation beyond py-spiffe's parsing, no atomic replacement, no
fsync. Runs until killed (SIGTERM).
"""

import os
import sys
import threading

from cryptography.hazmat.primitives.serialization import Encoding
from spiffe import WorkloadApiClient

out = sys.argv[1]


def on_success(context):  # type: ignore[no-untyped-def]
    svid = context.default_svid
    svid.save(os.path.join(out, "svid.pem"), os.path.join(out, "svid_key.pem"), Encoding.PEM)
    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    if bundle is not None:
        bundle.save(os.path.join(out, "svid_bundle.pem"), Encoding.PEM)


def on_error(error):  # type: ignore[no-untyped-def]
    print(f"naive watcher: {error}", file=sys.stderr, flush=True)


client = WorkloadApiClient()  # reads SPIFFE_ENDPOINT_SOCKET
client.stream_x509_contexts(on_success=on_success, on_error=on_error)
threading.Event().wait()
