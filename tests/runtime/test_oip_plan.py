"""The OIP fast lanes give exactly what the general paths give, or step aside (None)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import BaseModel, ConfigDict, field_serializer
from pydantic_core import to_json

from runtime.server import oip_binary
from runtime.server.oip import encode_outputs
from runtime.server.oip_plan import encode_plain, plain_fields

pytestmark = pytest.mark.unit


class Reply(BaseModel):
    predictions: list[int]
    score: float | None = None
    flags: list[bool] = []
    grid: list[list[float]] = []
    model_version: int | None = None  # the reply carries the version: never an output


def _general(results: list[Reply], wanted: list[str] | None, whole: bool) -> bytes:
    dumps = [r.model_dump(mode="json") for r in results]
    for d in dumps:
        d.pop("model_version", None)
    return to_json(encode_outputs(dumps, wanted, whole=whole))


def _fast(results: list[Reply], wanted: list[str] | None, whole: bool) -> bytes | None:
    fields = plain_fields(Reply)
    assert fields is not None
    outputs = encode_plain(results, Reply, fields, wanted, whole=whole)
    if outputs is None:
        return None
    for out in outputs:
        out["data"] = out["data"].tolist()
    return to_json(outputs)


_floats = st.floats(width=64)
_replies = st.builds(
    Reply,
    predictions=st.lists(st.integers(), max_size=3),
    score=st.none() | _floats,
    flags=st.lists(st.booleans(), max_size=3),
    grid=st.lists(st.lists(_floats, min_size=0, max_size=3), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(
    results=st.lists(_replies, min_size=1, max_size=4),
    wanted=st.none() | st.lists(st.sampled_from(["predictions", "score", "flags", "grid", "x"])),
    whole=st.booleans(),
)
def test_the_output_plan_encodes_as_the_general_path(
    results: list[Reply], wanted: list[str] | None, whole: bool
) -> None:
    whole = whole and len(results) == 1
    fast = _fast(results, wanted, whole)
    if fast is not None:
        assert fast == _general(results, wanted, whole)


def test_the_output_plan_takes_the_common_reply() -> None:
    results = [Reply(predictions=[3, 1], score=0.5, flags=[True], grid=[[0.1, 0.9], [1.0, 0.0]])]
    fast = _fast(results, None, True)
    assert fast is not None and fast == _general(results, None, True)
    assert [o["name"] for o in json.loads(fast)] == ["predictions", "score", "flags", "grid"]


def test_responses_of_another_type_take_the_general_path() -> None:
    fields = plain_fields(Reply)
    assert fields is not None
    assert encode_plain([{"predictions": [1]}], Reply, fields, None, whole=False) is None


class _Serialized(BaseModel):
    label: int

    @field_serializer("label")
    def _label(self, v: int) -> str:
        return str(v)


class _Extra(BaseModel):
    model_config = ConfigDict(extra="allow")
    label: int


class _Text(BaseModel):
    label: str


@pytest.mark.parametrize("model", [_Serialized, _Extra, _Text, None])
def test_models_whose_dump_is_not_their_fields_have_no_plan(model: Any) -> None:
    assert plain_fields(model) is None


_dtypes = st.sampled_from([d for d in oip_binary.DTYPES])


@settings(max_examples=200, deadline=None)
@given(data=st.data(), datatype=_dtypes)
def test_one_binary_input_reads_as_the_general_loop(data: st.DataObject, datatype: str) -> None:
    dtype = oip_binary.NUMPY[datatype]
    array = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0)))
    raw = array.tobytes()
    tensor = {
        "name": "x",
        "shape": list(array.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": len(raw)},
    }
    head = json.dumps({"inputs": [tensor]}).encode()
    fast = oip_binary._one_input(head + raw, len(head), tensor)
    general = oip_binary.decode_raw("inputs[0] (x)", datatype, list(array.shape), raw)
    if fast is None:
        assert not raw  # only an empty tensor steps aside
        return
    assert fast.dtype == general.dtype and fast.shape == general.shape
    assert fast.tobytes() == general.tobytes()
    _, arrays = oip_binary.split_request(head + raw, str(len(head)))
    assert arrays[0].tobytes() == raw and arrays[0].shape == array.shape


@pytest.mark.parametrize(
    ("tensor", "raw"),
    [
        ({"shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}, b"\0" * 4),
        ({"shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 5}}, b"\1\0\0\0a"),
        ({"shape": [True], "datatype": "INT8", "parameters": {"binary_data_size": 1}}, b"\0"),
        ({"shape": [1], "datatype": "INT8", "parameters": {"binary_data_size": True}}, b"\0"),
        ({"shape": [1], "datatype": "INT8", "data": [1], "parameters": {}}, b""),
    ],
)
def test_unusual_binary_inputs_step_aside_for_the_general_loop(
    tensor: dict[str, Any], raw: bytes
) -> None:
    head = json.dumps({"inputs": [{"name": "x", **tensor}]}).encode()
    assert oip_binary._one_input(head + raw, len(head), {"name": "x", **tensor}) is None
