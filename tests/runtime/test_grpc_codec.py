"""ModelInferRequest/Response <-> the dispatcher's tensors: raw and typed contents."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.server.errors import BadRequest
from runtime.server.grpc import grpc_predict_v2_pb2 as pb
from runtime.server.grpc.codec import request_payload, response_message

pytestmark = pytest.mark.unit


def _request(**tensor: object) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m", id="r1")
    req.inputs.add(name="x", **tensor)
    req.parameters["probabilities"].bool_param = True
    return req


def test_raw_contents_decode_like_the_binary_extension() -> None:
    req = _request(datatype="FP16", shape=[2, 2])
    req.raw_input_contents.append(np.array([[1, 2], [3, 4]], dtype="<f2").tobytes())
    payload, arrays = request_payload(req)
    assert payload["parameters"] == {"probabilities": True} and payload["id"] == "r1"
    assert arrays[0].tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_typed_contents_fill_the_array_of_their_datatype() -> None:
    req = _request(datatype="INT32", shape=[3])
    req.inputs[0].contents.int_contents.extend([1, 2, 3])
    _, arrays = request_payload(req)
    assert arrays[0].dtype == np.int32 and arrays[0].tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    ("datatype", "shape", "values", "message"),
    [
        ("FP32", [2], [1.0], "shape [2] holds 2 values but contents.fp32_contents has 1"),
        ("FP16", [1], [], "datatype 'FP16' has no typed contents; send it in raw_input_contents"),
    ],
)
def test_contents_that_do_not_fit_name_the_input(
    datatype: str, shape: list[int], values: list[float], message: str
) -> None:
    req = _request(datatype=datatype, shape=shape)
    if values:
        req.inputs[0].contents.fp32_contents.extend(values)
    with pytest.raises(BadRequest) as err:
        request_payload(req)
    assert err.value.message.startswith("inputs[0] (x)") and message in err.value.message


def test_raw_contents_must_be_one_per_input() -> None:
    req = _request(datatype="FP32", shape=[1])
    req.raw_input_contents.extend([b"\x00" * 4, b"\x00" * 4])
    with pytest.raises(BadRequest, match="raw_input_contents has 2 entries for 1 inputs"):
        request_payload(req)


def test_outputs_travel_as_raw_contents() -> None:
    reply = {
        "model_name": "m",
        "model_version": "3",
        "id": "r1",
        "outputs": [{"name": "y", "datatype": "INT64", "shape": [2], "data": [5, 6]}],
    }
    msg = response_message(reply)
    assert (msg.model_version, msg.id, msg.outputs[0].name) == ("3", "r1", "y")
    assert np.frombuffer(msg.raw_output_contents[0], dtype="<i8").tolist() == [5, 6]


def test_every_server_error_names_a_grpc_status_code() -> None:
    import grpc

    from runtime.server import errors

    classes = [errors.HttpError, *errors.HttpError.__subclasses__()]
    assert len(classes) >= 8
    for cls in classes:
        assert isinstance(getattr(grpc.StatusCode, cls.grpc), grpc.StatusCode), cls
    assert errors.BadRequest.grpc == "INVALID_ARGUMENT" and errors.NotReady.grpc == "UNAVAILABLE"
