"""The dev agent's JWT-SVIDs and JWT bundles."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import grpc
import pytest
from devagent_util import (
    CALL_TIMEOUT,
    HEADER,
    Stub,
    jwt_bundles_by_td,
)

from helper._proto import workload_pb2, workload_pb2_grpc
from helper.devagent import AgentOptions, DevAgentThread
from helper.identity.jwt import validate_jwt_svid

# ----- JWT-SVIDs and JWT bundles -----


def test_jwt_svid_per_identity_with_hints_verifies_with_the_streamed_bundle(
        tmp_path: Path) -> None:
    with (
        DevAgentThread(AgentOptions(tmp_path / "a.sock", svids=[("spiffe://example.org/db", "db")],
                                    jwt_ttl=120)) as agent,
        grpc.insecure_channel(agent.address) as channel,
    ):
        client = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        bundles_stream = client.FetchJWTBundles(workload_pb2.JWTBundlesRequest(),
                                                metadata=HEADER, timeout=CALL_TIMEOUT)
        bundles = jwt_bundles_by_td(next(bundles_stream))
        jwks = json.loads(agent.current_jwt_bundles.bundles["spiffe://example.org"])
        assert [k["use"] for k in jwks["keys"]] == ["jwt-svid"]
        response = client.FetchJWTSVID(
            workload_pb2.JWTSVIDRequest(audience=["aud1", "aud2"]), metadata=HEADER,
            timeout=CALL_TIMEOUT)
        assert [(s.spiffe_id, s.hint) for s in response.svids] == [
            (agent.spiffe_id, ""), ("spiffe://example.org/db", "db")]
        for item in response.svids:
            svid = validate_jwt_svid(item.svid, "aud2", bundles)
            assert svid.spiffe_id == item.spiffe_id
            assert svid.audience == ("aud1", "aud2")
            remaining = svid.expiry - datetime.datetime.now(datetime.timezone.utc)
            assert 100 < remaining.total_seconds() <= 120
        only = client.FetchJWTSVID(
            workload_pb2.JWTSVIDRequest(audience=["a"], spiffe_id="spiffe://example.org/db"),
            metadata=HEADER, timeout=CALL_TIMEOUT)
        assert [s.spiffe_id for s in only.svids] == ["spiffe://example.org/db"]
        bundles_stream.cancel()


def test_jwt_svid_request_without_audience_is_invalid_argument(stub: Stub) -> None:
    _, client = stub
    with pytest.raises(grpc.RpcError) as failure:
        client.FetchJWTSVID(workload_pb2.JWTSVIDRequest(), metadata=HEADER,
                            timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_jwt_key_rotation_and_federation_are_pushed_to_the_bundle_stream(stub: Stub) -> None:
    agent, client = stub
    stream = client.FetchJWTBundles(workload_pb2.JWTBundlesRequest(), metadata=HEADER,
                                    timeout=CALL_TIMEOUT)
    first = jwt_bundles_by_td(next(stream))
    assert list(first) == ["example.org"]
    old_kid = agent.ca.jwt_authority.kid
    agent.rotate_jwt_key()
    second = jwt_bundles_by_td(next(stream))
    assert set(second["example.org"].keys) == {old_kid, agent.ca.jwt_authority.kid}
    agent.set_federated(["partner.test"])
    assert set(jwt_bundles_by_td(next(stream))) == {"example.org", "partner.test"}
    agent.set_federated([])
    assert set(jwt_bundles_by_td(next(stream))) == {"example.org"}
    stream.cancel()


def test_validate_jwt_svid_accepts_good_and_names_the_rule_for_bad(stub: Stub) -> None:
    agent, client = stub
    token = agent.ca.mint_jwt_svid(agent.spiffe_id, ["svc"], 60)
    good = client.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(audience="svc", svid=token),
                                  metadata=HEADER, timeout=CALL_TIMEOUT)
    assert good.spiffe_id == agent.spiffe_id
    assert good.claims["sub"] == agent.spiffe_id
    with pytest.raises(grpc.RpcError) as failure:
        client.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(audience="other", svid=token),
                               metadata=HEADER, timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details().startswith("jwt_aud:")


def test_raw_jwt_responses_and_failures_can_be_injected(stub: Stub) -> None:
    agent, client = stub
    raw = workload_pb2.JWTSVIDResponse()
    raw.svids.add(spiffe_id=agent.spiffe_id, svid="not.a.token")
    agent.queue_jwt_svid_responses(raw)
    request = workload_pb2.JWTSVIDRequest(audience=["a"])
    assert client.FetchJWTSVID(request, metadata=HEADER, timeout=CALL_TIMEOUT) == raw
    assert client.FetchJWTSVID(request, metadata=HEADER, timeout=CALL_TIMEOUT) != raw
    agent.fail_jwt_svids(grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(grpc.RpcError) as failure:
        client.FetchJWTSVID(request, metadata=HEADER, timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    agent.fail_jwt_svids(None)
    assert client.FetchJWTSVID(request, metadata=HEADER, timeout=CALL_TIMEOUT).svids
    assert agent.jwt_calls == 4
