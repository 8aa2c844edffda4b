"""A header seen before (REST binary, gRPC): its route and reply header are kept, and
every answer is the one the general path gives."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from runtime.server import App, Request
from runtime.server.grpc import grpc_predict_v2_pb2 as pb
from runtime.server.grpc.service import InferenceService
from runtime.server.oip_binary import HeaderReader, encode_reply, output_choices
from tests.runtime.test_app import FakeModel, app_for

pytestmark = pytest.mark.unit

INFER = "/v2/models/summer/infer"


def _binary(values: np.ndarray, **parameters: Any) -> Request:
    raw = values.astype("<f4").tobytes()
    head = json.dumps(
        {
            "id": "q1",
            "inputs": [
                {
                    "name": "input-0",
                    "shape": list(values.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            **parameters,
        }
    ).encode()
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(head)),
        "x-request-id": "r1",  # (an error's body names it)
    }
    return Request("POST", INFER, headers, head + raw)


def _answer(app: App, req: Request) -> tuple[int, dict[str, str], bytes]:
    r = app.handle(Request(req.method, req.path, dict(req.headers), req.body))
    r.headers.pop("X-Request-Id")
    return r.status, r.headers, r.body


CASES = {
    "one whole request, binary out": (
        np.array([1.0, 2.5, 4.0]),
        {"parameters": {"binary_data_output": True}},
    ),
    "rows, binary out": (
        np.arange(6.0).reshape(2, 3),
        {"parameters": {"binary_data_output": True}},
    ),
    "rows, JSON out": (np.arange(6.0).reshape(3, 2), {}),
    "one output binary by name": (
        np.arange(4.0).reshape(2, 2),
        {"outputs": [{"name": "total", "parameters": {"binary_data": True}}]},
    ),
    "a shape the field cannot take": (np.zeros((2, 2, 2)), {}),
    "no rows, binary asked": (np.zeros((0, 3)), {"parameters": {"binary_data_output": True}}),
    "an output that does not exist, binary asked": (
        np.arange(4.0).reshape(2, 2),
        {"outputs": [{"name": "nope"}], "parameters": {"binary_data_output": True}},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_kept_header_answers_what_a_fresh_server_answers(case: str) -> None:
    values, parameters = CASES[case]
    model = FakeModel()
    warm = app_for("echo_inference", "summer", model)
    _answer(warm, _binary(values + 7, **parameters))  # the header is kept from here on
    for step in range(3):
        if step == 2:
            model.refresh()  # a new version: the reply's header says it
        new = values * (step + 1)
        fresh = app_for("echo_inference", "summer", FakeModel())
        fresh_model = fresh.dispatcher.model
        assert isinstance(fresh_model, FakeModel)
        fresh_model.version = model.version
        assert _answer(warm, _binary(new, **parameters)) == _answer(
            fresh, _binary(new, **parameters)
        )
        fresh.close()
    warm.close()


def test_the_kept_reply_header_is_the_general_one_for_each_version_and_shape() -> None:
    payload = {"inputs": [], "parameters": {"binary_data_output": True}, "id": "a"}
    reader = HeaderReader()
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 8},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    payload, _ = reader.split(body + bytes(8), str(len(body)))
    kept = reader.kept(payload)
    assert kept is not None and kept.choices == output_choices(payload)

    def reply(version: str, data: np.ndarray) -> dict[str, Any]:
        out = {"name": "y", "datatype": "INT64", "shape": list(data.shape), "data": data.ravel()}
        return {"model_name": "m", "model_version": version, "outputs": [out]}

    for version, data in [
        ("1", np.arange(2)),
        ("1", np.arange(2) + 5),  # the kept header, new bytes
        ("2", np.arange(2)),
        ("2", np.arange(3)),
        ("2", np.arange(6).reshape(2, 3)),
        ("2", np.arange(6).reshape(3, 2)),
    ]:
        assert kept.encode_reply(reply(version, data), payload) == encode_reply(
            reply(version, data), payload
        )

    def listed() -> dict[str, Any]:  # data as a list: the JSON encoder's, made binary
        out = {"name": "y", "datatype": "INT64", "shape": [1], "data": [3]}
        return {"model_name": "m", "model_version": "1", "outputs": [out]}

    assert kept.encode_reply(listed(), payload) == encode_reply(listed(), payload)


def _grpc(values: np.ndarray) -> bytes:
    request = pb.ModelInferRequest(
        model_name="summer", raw_input_contents=[values.astype("<f4").tobytes()]
    )
    request.inputs.add(name="input-0", datatype="FP32", shape=list(values.shape))
    return request.SerializeToString()  # type: ignore[no-any-return]


@pytest.mark.parametrize("shape", [(3,), (2, 3), (2, 2, 2)])
def test_a_kept_grpc_head_answers_what_a_fresh_server_answers(shape: tuple[int, ...]) -> None:
    values = np.arange(float(np.prod(shape))).reshape(shape)
    warm_app = app_for("echo_inference", "summer", FakeModel())
    warm = InferenceService(warm_app)
    path = "/inference.GRPCInferenceService/ModelInfer"
    meta = {"x-request-id": "r1"}
    warm(path, meta, _grpc(values + 1))
    for step in (2, 3):
        fresh_app = app_for("echo_inference", "summer", FakeModel())
        fresh = InferenceService(fresh_app)
        got, want = warm(path, meta, _grpc(values * step)), fresh(path, meta, _grpc(values * step))
        assert (got.code, got.message, got.body) == (want.code, want.message, want.body)
        fresh_app.close()
    warm_app.close()
