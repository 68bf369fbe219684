"""The generated Workload API modules: up to date with the .proto, and wire-compatible."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from helper._proto import workload_pb2

REPO = Path(__file__).resolve().parents[2]
GENERATED = REPO / "helper" / "_proto"


def load_gen_proto() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_proto", REPO / "tools" / "gen_proto.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed_files() -> set[str]:
    return {p.name for p in GENERATED.iterdir() if p.is_file() and p.suffix in {".py", ".pyi"}}


def test_generated_modules_are_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (a dev dependency) is needed")
    load_gen_proto().generate(tmp_path)
    generated = {p.name for p in tmp_path.iterdir() if p.is_file()}
    assert generated == committed_files(), (
        "helper/_proto holds other files than the generator writes"
    )
    stale = [
        name
        for name in sorted(generated)
        if (tmp_path / name).read_bytes() != (GENERATED / name).read_bytes()
    ]
    assert not stale, f"helper/_proto is stale, run tools/gen_proto.py: {stale}"


EXPECTED_METHODS = {
    # path: (request, response, server streaming)
    "/SpiffeWorkloadAPI/FetchX509SVID": ("X509SVIDRequest", "X509SVIDResponse", True),
    "/SpiffeWorkloadAPI/FetchX509Bundles": ("X509BundlesRequest", "X509BundlesResponse", True),
    "/SpiffeWorkloadAPI/FetchJWTSVID": ("JWTSVIDRequest", "JWTSVIDResponse", False),
    "/SpiffeWorkloadAPI/FetchJWTBundles": ("JWTBundlesRequest", "JWTBundlesResponse", True),
    "/SpiffeWorkloadAPI/ValidateJWTSVID": (
        "ValidateJWTSVIDRequest",
        "ValidateJWTSVIDResponse",
        False,
    ),
}


def test_service_has_no_package_and_the_spiffe_method_paths() -> None:
    assert workload_pb2.DESCRIPTOR.package == ""
    service = workload_pb2.DESCRIPTOR.services_by_name["SpiffeWorkloadAPI"]
    methods = {
        f"/{service.full_name}/{m.name}": (
            m.input_type.full_name,
            m.output_type.full_name,
            m.server_streaming,
        )
        for m in service.methods
    }
    assert methods == EXPECTED_METHODS
    assert not any(m.client_streaming for m in service.methods)


def test_generated_stub_uses_the_method_paths() -> None:
    text = (GENERATED / "workload_pb2_grpc.py").read_text()
    for path in EXPECTED_METHODS:
        assert f"'{path}'" in text


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        ("X509SVIDResponse", {"svids": 1, "crl": 2, "federated_bundles": 3}),
        ("X509SVID", {"spiffe_id": 1, "x509_svid": 2, "x509_svid_key": 3, "bundle": 4, "hint": 5}),
        ("X509BundlesResponse", {"crl": 1, "bundles": 2}),
        ("JWTSVIDRequest", {"audience": 1, "spiffe_id": 2}),
        ("JWTSVIDResponse", {"svids": 1}),
        ("JWTSVID", {"spiffe_id": 1, "svid": 2, "hint": 3}),
        ("JWTBundlesResponse", {"bundles": 1}),
        ("ValidateJWTSVIDRequest", {"audience": 1, "svid": 2}),
        ("ValidateJWTSVIDResponse", {"spiffe_id": 1, "claims": 2}),
        ("X509SVIDRequest", {}),
        ("X509BundlesRequest", {}),
        ("JWTBundlesRequest", {}),
    ],
)
def test_field_numbers_match_the_workload_api(message: str, fields: dict[str, int]) -> None:
    descriptor = workload_pb2.DESCRIPTOR.message_types_by_name[message]
    assert {f.name: f.number for f in descriptor.fields} == fields
