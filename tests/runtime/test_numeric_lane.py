"""The numeric lane accepts only what pydantic accepts, with the same values; errors stay pydantic's."""

from __future__ import annotations

import json
from typing import Annotated, Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import AliasPath, BaseModel, ConfigDict, Field, ValidationError, field_validator

from functions._digits import PredictRequest
from mlfn.settings import Settings
from runtime import Rows, stack
from runtime.registry import discover
from runtime.server import Request, create_app
from runtime.server.numeric import MIN_BYTES, lane_for

pytestmark = pytest.mark.unit

Unit = Annotated[float, Field(ge=-1, le=1)]


class Small(BaseModel):
    """Every kind of field the lane covers, small enough for random bodies."""

    rows: list[Annotated[list[Unit], Field(min_length=2, max_length=3)]] = Field(min_length=1)
    weights: list[Annotated[float, Field(gt=0)]]
    flag: bool = False
    k: int = Field(default=0, ge=0, le=10)
    scale: float = Field(default=1.0, lt=100)


class Forbidding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[list[float]]


class Raw(str):
    """A number token written as is (digits a float's repr would never produce)."""


def _render(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_render(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


number_tokens = st.from_regex(r"\A-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?\Z")
# digits a float's repr never writes, within the bounds: orjson and pydantic must read alike
unit_tokens = st.from_regex(r"\A-?0\.[0-9]{1,25}([eE]-[0-9]{1,2})?\Z").map(Raw)
units = st.one_of(st.floats(-1, 1), st.integers(-1, 1), unit_tokens)
numbers = st.one_of(
    units,
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**70), 2**70),
    number_tokens.map(Raw),
)
oddities = st.one_of(st.booleans(), st.none(), st.text(max_size=3), st.lists(numbers, max_size=2))
anything = st.one_of(numbers, oddities)
valid = st.fixed_dictionaries(
    {
        "rows": st.integers(2, 3).flatmap(
            lambda n: st.lists(st.lists(units, min_size=n, max_size=n), min_size=1, max_size=3)
        ),
        "weights": st.lists(st.floats(1e-3, 10) | st.integers(1, 5), max_size=3),
    },
    optional={
        "flag": st.booleans(),
        "k": st.integers(0, 10),
        "scale": st.floats(-1e3, 99) | st.integers(-5, 5),
    },
)
MUTATIONS = ["none", "cell", "row", "rows", "scalar", "extra", "drop", "repeat", "escape", "spaces"]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Mostly valid bodies of ``Small``, half of them changed in one place."""
    obj = draw(valid)
    twist = draw(st.sampled_from(MUTATIONS))
    if twist == "cell":
        row = draw(st.sampled_from(obj["rows"]))
        row[draw(st.integers(0, len(row) - 1))] = draw(anything)
    elif twist == "row":
        obj["rows"].append(draw(st.lists(anything, max_size=4)))
    elif twist == "rows":
        obj[draw(st.sampled_from(["rows", "weights"]))] = draw(anything)
    elif twist == "scalar":
        obj[draw(st.sampled_from(["flag", "k", "scale"]))] = draw(anything)
    elif twist == "extra":
        obj["extra"] = draw(anything)
    elif twist == "drop":
        del obj[draw(st.sampled_from(sorted(obj)))]
    text = _render(obj)
    if twist == "repeat":  # a key twice: the last one counts, for pydantic and orjson alike
        text = (
            text[:-1]
            + ', "rows": '
            + _render(draw(st.lists(st.lists(units, min_size=2, max_size=2), max_size=2)))
            + "}"
        )
    elif twist == "escape":
        text = text.replace('"rows"', '"\\u0072ows"', 1)
    elif twist == "spaces":
        text = text.replace(", ", ",\n\t ").replace(": ", " :  ")
    return text.encode()


def _typed(value: Any) -> Any:
    """A value with the type of every part, Rows read as the list it is."""
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    return (type(value).__name__, value)


def _same_as_pydantic(model: type[BaseModel], body: bytes) -> bool:
    """Whether the lane took ``body``; if it did, pydantic gives the very same request."""
    lane = lane_for(model)
    assert lane is not None
    got = lane.decode(body)
    if got is None:
        return False
    try:
        want = model.model_validate_json(body)
    except ValidationError as err:
        raise AssertionError(f"the lane accepted what pydantic refuses: {body!r}: {err}") from err
    assert _typed(got.__dict__) == _typed(want.__dict__)
    assert got.model_fields_set == want.model_fields_set
    assert got.model_dump_json() == want.model_dump_json()
    for name, value in got.__dict__.items():
        if isinstance(value, Rows):
            assert value.array.dtype == np.float64
            assert np.array_equal(stack([got], name), stack([want], name))
    return True


@settings(max_examples=400, database=None, deadline=None)
@given(bodies())
def test_the_lane_accepts_only_what_pydantic_accepts_with_the_same_values(body: bytes) -> None:
    _same_as_pydantic(Small, body)


class OneField(BaseModel):
    """A tensor's request: one rows field, the rest defaulted."""

    rows: list[Annotated[list[Unit], Field(min_length=2, max_length=3)]] = Field(min_length=1)
    flag: bool = False


def _tensor(shape: tuple[int, int], dtype: str) -> st.SearchStrategy[Any]:
    n = shape[0] * shape[1]
    values: st.SearchStrategy[Any] = (
        st.floats(-1.5, 1.5, width=16) | st.just(float("nan"))
        if dtype.startswith("float")
        else st.integers(0 if dtype.startswith("u") else -2, 2)
    )
    return st.lists(values, min_size=n, max_size=n).map(
        lambda v: np.array(v, dtype=dtype).reshape(shape)
    )


tensors = st.one_of(
    st.tuples(
        st.tuples(st.integers(0, 4), st.integers(1, 4)),
        st.sampled_from(["float16", "float32", "float64", "int8", "uint8", "int64"]),
    ).flatmap(lambda sd: _tensor(*sd)),
    st.lists(st.booleans(), min_size=2, max_size=3).map(lambda v: np.array([v])),
    st.lists(st.floats(-1, 1), min_size=2, max_size=3).map(np.array),  # the wrong rank
)


@settings(max_examples=400, database=None, deadline=None)
@given(tensors)
def test_a_tensor_takes_the_lane_only_as_pydantic_would_read_it(array: Any) -> None:
    lane = lane_for(OneField)
    assert lane is not None
    got = lane.from_array("rows", array)
    if got is None:
        return
    want = OneField.model_validate({"rows": array.tolist()})
    assert _typed(got.__dict__) == _typed(want.__dict__)
    assert got.model_fields_set == want.model_fields_set
    assert np.array_equal(stack([got], "rows"), stack([want], "rows"))


def test_a_tensor_is_left_to_pydantic_when_another_field_is_required() -> None:
    lane = lane_for(Small)
    assert lane is not None
    assert lane.from_array("rows", np.zeros((1, 2))) is None  # weights has no default
    assert lane.from_array("flag", np.zeros(2)) is None


@settings(max_examples=100, database=None, deadline=None)
@given(bodies())
def test_extra_keys_forbidden_are_left_to_pydantic(body: bytes) -> None:
    _same_as_pydantic(Forbidding, body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"rows": [[0.5, -1, 0], [1, 0.25, 0.0]], "weights": [2], "flag": true, "k": 3}',
        b'{"rows":[[0.5,0.5]],"weights":[1e-3],"scale":2}',  # ints and exponents: converted
        b'{ "rows" : [ [ -0.0 , 1.0 ] ] , "weights" : [ 0.5 ] , "flag" : false }',
    ],
)
def test_ordinary_bodies_take_the_lane(body: bytes) -> None:
    assert _same_as_pydantic(Small, body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"rows": [[0.5, 1.5]], "weights": [1]}',  # out of bounds
        b'{"rows": [[0.5, true]], "weights": [1]}',  # a boolean in a row
        b'{"rows": [[0.5, null]], "weights": [1]}',
        b'{"rows": [[0.5, "0.5"]], "weights": [1]}',  # pydantic reads the string: it decides
        b'{"rows": [[0.5, 0.5], [0.5, 0.5, 0.5]], "weights": [1]}',  # ragged: pydantic takes it
        b'{"rows": [[0.5, 0.5]], "weights": [0]}',  # gt=0
        b'{"rows": [[0.5, 0.5]], "weights": [1], "k": 1.0}',  # pydantic makes an int of it
        b'{"rows": [[0.5, 0.5]], "weights": [1], "other": 1}',
        b'{"rows": [[0.5, 0.5]]}',  # a required field is missing
        b'[{"rows": [[0.5, 0.5]], "weights": [1]}]',
        b'{"rows": [[0.5, 0.5]], "weights": [1], "flag": "yes"}',
        b'{"rows": [[0.5, 0.5]], "weights": [1e999]}',
        b"not json",
    ],
)
def test_unusual_bodies_are_left_to_pydantic(body: bytes) -> None:
    assert lane_for(Small).decode(body) is None  # type: ignore[union-attr]


def test_a_predict_request_takes_the_lane() -> None:
    body = json.dumps({"instances": [[i / 64 for i in range(64)]] * 3}).encode()
    assert _same_as_pydantic(PredictRequest, body)
    assert lane_for(PredictRequest).decode(body).instances.array.shape == (3, 64)  # type: ignore[union-attr]


class WithValidator(BaseModel):
    rows: list[list[float]]

    @field_validator("rows")
    @classmethod
    def _check(cls, v: list[list[float]]) -> list[list[float]]:
        return v


class Aliased(BaseModel):
    rows: list[list[float]] = Field(validation_alias=AliasPath("data", 0))


class Strict(BaseModel):
    model_config = ConfigDict(strict=True)
    rows: list[list[float]]


class Texts(BaseModel):
    rows: list[list[float]]
    name: str


class Ints(BaseModel):
    rows: list[list[int]]


class NoRows(BaseModel):
    k: int


class Multiple(BaseModel):
    rows: list[list[Annotated[float, Field(multiple_of=0.5)]]]


@pytest.mark.parametrize("model", [WithValidator, Aliased, Strict, Texts, Ints, NoRows, Multiple])
def test_models_outside_the_lane_get_none(model: type[BaseModel]) -> None:
    assert lane_for(model) is None


def test_stack_joins_the_lanes_arrays_and_converts_anything_else() -> None:
    lane = lane_for(PredictRequest)
    assert lane is not None
    bodies = [json.dumps({"instances": [[k / 64] * 64] * (k + 1)}).encode() for k in range(3)]
    fast = [lane.decode(b) for b in bodies]
    slow = [PredictRequest.model_validate_json(b) for b in bodies]
    assert all(isinstance(r.instances, Rows) for r in fast)  # type: ignore[union-attr]
    assert stack(fast, "instances").shape == (6, 64)
    assert np.array_equal(stack(fast, "instances"), stack(slow, "instances"))
    assert np.array_equal(stack([fast[0], slow[1]], "instances"), stack(slow[:2], "instances"))


def test_a_bad_row_is_the_same_400_as_before() -> None:
    """The lane leaves a bad body to pydantic: the 400 names the field as it always did."""
    fn = discover("tests.runtime.userfns.echo_inference").get("summer")
    app = create_app(fn, Settings(), model_opener=lambda f, s: None)
    assert app.wait_ready(5)
    try:
        ok = app.handle(
            Request("POST", "/", {"content-type": "application/json"}, b'{"x": [1, 2.5]}')
        )
        assert ok.status == 200 and ok.json()["total"] == 3.5
        bad = app.handle(
            Request(
                "POST", "/", {"content-type": "application/json"}, b'{"x": [1, "a"], "work_ms": 1}'
            )
        )
        assert bad.status == 400
        assert bad.json()["error"]["fields"][0]["field"] == "x.1"
    finally:
        app.close()


def test_the_server_sends_large_bodies_through_the_lane_and_keeps_pydantics_400() -> None:
    fn = discover("tests.runtime.userfns.echo_inference").get("summer")
    app = create_app(fn, Settings(), model_opener=lambda f, s: None)
    assert app.wait_ready(5)
    ctype = {"content-type": "application/json"}
    values = [0.25] * 2000
    big = json.dumps({"x": values}).encode()
    assert len(big) >= MIN_BYTES
    try:
        (small_req,), _ = app.dispatcher.decode_json(b'{"x": [1, 2]}', "application/json")
        (big_req,), _ = app.dispatcher.decode_json(big, "application/json")
        assert type(small_req.x) is list and type(big_req.x) is Rows  # type: ignore[attr-defined]
        ok = app.handle(Request("POST", "/", ctype, big))
        assert ok.status == 200 and ok.json()["total"] == 500.0
        values[1500] = "a"  # type: ignore[call-overload]
        bad = app.handle(Request("POST", "/", ctype, json.dumps({"x": values}).encode()))
        assert bad.status == 400
        assert bad.json()["error"]["fields"][0]["field"] == "x.1500"
    finally:
        app.close()
