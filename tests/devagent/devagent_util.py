"""Helpers shared by the dev agent tests: DER splitting, chain checks, the Workload API calls."""

from __future__ import annotations

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store

from helper._proto import workload_pb2, workload_pb2_grpc
from helper.devagent import DevAgentThread
from helper.identity.jwks import JWTBundle, parse_jwt_bundles

HEADER = (("workload.spiffe.io", "true"),)
CALL_TIMEOUT = 10.0


# ----- helpers -----


def split_der(data: bytes) -> list[x509.Certificate]:
    """Split concatenated DER certificates (each a SEQUENCE with a definite length)."""
    certs = []
    while data:
        assert data[0] == 0x30
        first = data[1]
        if first < 0x80:
            size, header = first, 2
        else:
            count = first & 0x7F
            size, header = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
        certs.append(x509.load_der_x509_certificate(data[: header + size]))
        data = data[header + size :]
    return certs


def public_der(key_holder: x509.Certificate | bytes) -> bytes:
    if isinstance(key_holder, bytes):
        public = serialization.load_der_private_key(key_holder, None).public_key()
    else:
        public = key_holder.public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verified_chain(svid: workload_pb2.X509SVID) -> list[x509.Certificate]:
    """Verify the SVID's chain to its bundle; return the chain from leaf to root."""
    chain = split_der(svid.x509_svid)
    verifier = PolicyBuilder().store(Store(split_der(svid.bundle))).build_client_verifier()
    verified = verifier.verify(chain[0], chain[1:])
    assert [san.value for san in verified.subjects or []] == [svid.spiffe_id]
    return list(verified.chain)


def serial(response: workload_pb2.X509SVIDResponse) -> int:
    return split_der(response.svids[0].x509_svid)[0].serial_number


Stub = tuple[DevAgentThread, workload_pb2_grpc.SpiffeWorkloadAPIStub]


def open_stream(stub: workload_pb2_grpc.SpiffeWorkloadAPIStub) -> grpc.Call:
    return stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=HEADER, timeout=CALL_TIMEOUT)


def jwt_bundles_by_td(response: workload_pb2.JWTBundlesResponse) -> dict[str, JWTBundle]:
    return parse_jwt_bundles(dict(response.bundles))
