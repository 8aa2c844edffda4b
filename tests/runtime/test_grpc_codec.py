"""ModelInferRequest/Response <-> the dispatcher's tensors: raw and typed contents."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.server.errors import BadRequest
from runtime.server.grpc import grpc_predict_v2_pb2 as pb
from runtime.server.grpc.codec import (
    RequestReader,
    encode_response,
    request_payload,
    response_message,
    split_raw,
)

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


def _common(**extra: object) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m", model_version="2", id="r9", **extra)
    req.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    req.inputs.add(name="y", datatype="INT64", shape=[2])
    req.outputs.add(name="predictions")
    req.parameters["probabilities"].bool_param = True
    req.raw_input_contents.extend(
        [np.arange(6, dtype="<f4").tobytes(), np.array([7, 8], dtype="<i8").tobytes()]
    )
    return req


def test_the_reader_reads_what_the_general_path_reads_and_keeps_the_head() -> None:
    reader = RequestReader()
    req = _common()
    for _ in range(2):  # the second call is served from the kept head
        got = reader.read(req.SerializeToString())
        assert got is not None
        payload, arrays = request_payload(req)
        assert (got.model_name, got.model_version) == ("m", "2")
        assert got.payload == payload
        assert {k: a.tolist() for k, a in got.arrays.items()} == {
            k: a.tolist() for k, a in arrays.items()
        }
        assert all(got.arrays[k].dtype == arrays[k].dtype for k in arrays)
    req.raw_input_contents[0] = np.ones(6, dtype="<f4").tobytes()  # same head, new tensor
    again = reader.read(req.SerializeToString())
    assert again is not None and again.arrays[0].tolist() == [[1.0] * 3] * 2


@pytest.mark.parametrize(
    "change",
    [
        "typed contents",
        "BYTES",
        "a raw size that does not fit",
        "one raw entry for two inputs",
        "a negative size",
        "not protobuf",
    ],
)
def test_the_reader_leaves_anything_unusual_to_the_general_path(change: str) -> None:
    req = _common()
    if change == "typed contents":
        del req.raw_input_contents[:]
        req.inputs[0].contents.fp32_contents.extend([0.0] * 6)
    elif change == "BYTES":
        req.inputs[1].datatype = "BYTES"
    elif change == "a raw size that does not fit":
        req.raw_input_contents[1] = b"\x00" * 3
    elif change == "one raw entry for two inputs":
        del req.raw_input_contents[1]
    elif change == "a negative size":
        req.inputs[1].shape[0] = -2
    message = b"\xff\xff\xff" if change == "not protobuf" else req.SerializeToString()
    assert RequestReader().read(message) is None


def test_split_raw_returns_none_for_wire_formats_it_does_not_read() -> None:
    assert split_raw(b"\x0a\x05ab") is None  # a length past the end
    assert split_raw(b"\x0d\x00\x00\x00\x00") is None  # a fixed32 field
    head, raw = split_raw(b"") or (None, None)
    assert head == b"" and raw == []


@pytest.mark.parametrize(
    "reply",
    [
        {"model_name": "m", "model_version": "3", "id": "r1", "outputs": []},
        {"model_name": "m", "model_version": None, "outputs": []},
        {
            "model_name": "predict",
            "model_version": "12",
            "outputs": [
                {"name": "predictions", "datatype": "INT64", "shape": [2], "data": np.arange(2)},
                {
                    "name": "probabilities",
                    "datatype": "FP64",
                    "shape": [2, 200],
                    "data": np.zeros(400),
                },
                {"name": "ok", "datatype": "BOOL", "shape": [1], "data": [True]},
                {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["é"]},
            ],
        },
    ],
)
def test_the_direct_encoder_writes_what_protobuf_writes(reply: dict[str, object]) -> None:
    want = response_message(reply).SerializeToString()
    assert encode_response(reply) == want
    assert pb.ModelInferResponse.FromString(encode_response(reply)) == response_message(reply)
