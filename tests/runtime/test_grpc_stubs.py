"""The committed gRPC stubs are what grpcio-tools makes of the committed proto."""

from __future__ import annotations

import importlib.util

import pytest

from runtime.server.grpc import generate

pytestmark = pytest.mark.unit


@pytest.mark.skipif(
    importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools (dev extra) missing"
)
def test_the_committed_stubs_are_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.main(["--check"]) == 0, capsys.readouterr().out


def test_the_descriptor_is_the_protocols_so_kserve_loads_beside_it() -> None:
    from runtime.server.grpc import grpc_predict_v2_pb2 as ours

    assert (
        ours.DESCRIPTOR.name == "grpc_predict_v2.proto" and ours.DESCRIPTOR.package == "inference"
    )
    service = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert {m.name for m in service.methods} >= {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    }
    kserve = pytest.importorskip("kserve.protocol.grpc.grpc_predict_v2_pb2")
    assert kserve.DESCRIPTOR is ours.DESCRIPTOR  # the same file in one pool: no clash
