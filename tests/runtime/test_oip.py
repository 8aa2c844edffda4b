"""Open Inference Protocol tensors <-> request rows: the documented mapping."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import BaseModel

from runtime.server.errors import BadRequest
from runtime.server.oip import decode_inputs, encode_outputs, tensor_metadata

pytestmark = pytest.mark.unit


class Rows(BaseModel):
    instances: list[list[float]]
    probabilities: bool = False


class Point(BaseModel):
    x: list[float]
    label: str | None = None


def test_a_tensor_of_the_fields_rank_is_one_whole_request_with_parameters() -> None:
    payload = {
        "inputs": [
            {"name": "instances", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]}
        ],
        "parameters": {"probabilities": True},
    }
    rows, whole = decode_inputs(payload, Rows)
    assert whole and rows == [{"probabilities": True, "instances": [[1, 2, 3], [4, 5, 6]]}]


def test_one_rank_more_than_the_field_counts_requests_and_nested_data_is_accepted() -> None:
    payload = {
        "inputs": [
            {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]},
            {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
        ]
    }
    rows, whole = decode_inputs(payload, Point)
    assert not whole and rows == [{"x": [1, 2], "label": "a"}, {"x": [3, 4], "label": "b"}]


def test_single_field_models_take_any_input_name() -> None:
    class One(BaseModel):
        x: list[float]

    rows, _ = decode_inputs({"inputs": [{"name": "input-0", "shape": [1, 2], "data": [1, 2]}]}, One)
    assert rows == [{"x": [1, 2]}]


def test_one_tensor_of_any_name_fills_the_only_required_field() -> None:
    payload = {"inputs": [{"name": "input-0", "shape": [1, 2], "data": [1, 2]}]}
    assert decode_inputs(payload, Rows)[0] == [{"instances": [[1, 2]]}]


def test_two_required_fields_take_no_unknown_name() -> None:
    class Two(BaseModel):
        a: list[float]
        b: list[float]

    with pytest.raises(BadRequest) as err:
        decode_inputs({"inputs": [{"name": "input-0", "shape": [1, 2], "data": [1, 2]}]}, Two)
    assert "unknown input 'input-0'; this model takes: a, b" in err.value.message


def test_only_parameters_naming_request_fields_reach_the_rows() -> None:
    payload = {
        "inputs": [{"name": "instances", "shape": [1, 1], "data": [1]}],
        "parameters": {"probabilities": True, "binary_data_output": True, "priority": 3},
    }
    assert decode_inputs(payload, Rows)[0] == [{"probabilities": True, "instances": [[1]]}]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"inputs": "no"}, 'an "inputs" list'),
        ({"inputs": []}, "send one tensor per field: x, label"),
        (
            {
                "inputs": [
                    {"name": "y", "shape": [1, 1], "data": [1]},
                    {"name": "x", "shape": [1, 1], "data": [1]},
                ]
            },
            "unknown input 'y'; this model takes: x, label",
        ),
        (
            {"inputs": [{"name": "x", "shape": [2, 2], "data": [1, 2, 3]}]},
            "holds 4 values but data has 3",
        ),
        ({"inputs": [{"name": "x", "shape": [1, 1, 2], "data": [1, 2]}]}, "has rank 1 per request"),
        ({"inputs": [{"name": "x", "shape": "2", "data": [1]}]}, "shape must be a non-empty list"),
        (
            {
                "inputs": [
                    {"name": "x", "shape": [2, 1], "data": [1, 2]},
                    {"name": "label", "shape": [3], "data": ["a", "b", "c"]},
                ]
            },
            "has 3 rows but inputs[0] has 2",
        ),
    ],
)
def test_bad_tensors_say_what_is_wrong(payload: object, message: str) -> None:
    with pytest.raises(BadRequest, match=None) as err:
        decode_inputs(payload, Point)
    assert message in err.value.message


def test_outputs_are_one_tensor_per_field_with_inferred_datatypes() -> None:
    responses = [{"predictions": [3, 4], "probabilities": None, "ok": True}]
    out = encode_outputs(responses, whole=True)
    assert out == [
        {"name": "predictions", "datatype": "INT64", "shape": [2], "data": [3, 4]},
        {"name": "ok", "datatype": "BOOL", "shape": [1], "data": [True]},
    ]
    per_row = encode_outputs([{"y": 1.5}, {"y": 2.5}], wanted=["y"])
    assert per_row == [{"name": "y", "datatype": "FP64", "shape": [2], "data": [1.5, 2.5]}]


def test_metadata_lists_fields_as_tensors() -> None:
    assert tensor_metadata(Rows) == [
        {"name": "instances", "datatype": "FP64", "shape": [-1, -1, -1]},
        {"name": "probabilities", "datatype": "BOOL", "shape": [-1]},
    ]


@pytest.mark.parametrize(
    ("model", "name", "shape", "params"),
    [
        (Rows, "instances", [2, 3], {"probabilities": True, "binary_data_output": True}),
        (Rows, "input-0", [2, 3], None),
        (Rows, "instances", [4, 1, 3], {}),
        (Point, "x", [2, 2], {"label": "a"}),
    ],
)
def test_decoded_arrays_give_the_rows_their_json_data_gives(
    model: type[BaseModel], name: str, shape: list[int], params: dict[str, object] | None
) -> None:
    data = np.arange(float(np.prod(shape))).reshape(shape)
    tensor = {"name": name, "shape": shape, "datatype": "FP64"}
    as_json = {"inputs": [{**tensor, "data": data.ravel().tolist()}], "parameters": params}
    as_array = {"inputs": [tensor], "parameters": params}
    assert decode_inputs(as_array, model, {0: data}) == decode_inputs(as_json, model)


def test_a_decoded_array_of_the_wrong_rank_is_still_a_400_naming_the_input() -> None:
    payload = {"inputs": [{"name": "x", "shape": [1, 2, 2], "datatype": "FP64"}]}
    with pytest.raises(BadRequest) as err:
        decode_inputs(payload, Point, {0: np.zeros((1, 2, 2))})
    assert "inputs[0] (x) has shape [1, 2, 2]" in err.value.message


@pytest.mark.parametrize(
    ("values", "datatype", "shape", "data"),
    [
        ([[1, 2], [3, 4]], "INT64", [2, 2], [1, 2, 3, 4]),
        ([[1, 2.5]], "FP64", [1, 2], [1.0, 2.5]),
        ([[True], [False]], "BOOL", [2, 1], [True, False]),
        ([[1, 2], [3]], "INT64", [2, 2], [1, 2, 3]),  # ragged: the general path, as before
        ([[], []], "BYTES", [2, 0], []),  # empty: no datatype to infer
        ([[2**70]], "INT64", [1, 1], [2**70]),  # beyond int64: left to the general path
        (["a", "b"], "BYTES", [2], ["a", "b"]),
    ],
)
def test_output_columns_keep_their_datatype_shape_and_values(
    values: list[object], datatype: str, shape: list[int], data: list[object]
) -> None:
    (out,) = encode_outputs([{"y": v} for v in values])
    assert out == {"name": "y", "datatype": datatype, "shape": shape, "data": data}
