"""orjson where it gives the stdlib's answer, the stdlib everywhere else."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import fastjson

pytestmark = pytest.mark.unit

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to itself and int/float kept apart (json keeps them apart)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@settings(max_examples=300, database=None, deadline=None)
@given(json_values, st.sampled_from(["utf-8", "utf-16", "utf-32", "utf-8-sig"]), st.booleans())
def test_loads_gives_the_stdlibs_value(value: Any, encoding: str, as_text: bool) -> None:
    text = json.dumps(value)
    body: bytes | str = text if as_text else text.encode(encoding)
    assert _same(fastjson.loads(body), json.loads(body))


@pytest.mark.parametrize("body", [b"", b"[1,", b"{'a': 1}", b"\xff\xfe\xfd", b"[1] x", b"[1, 2"])
def test_loads_raises_what_the_stdlib_raises(body: bytes) -> None:
    with pytest.raises(ValueError) as ours:
        fastjson.loads(body)
    with pytest.raises(ValueError) as stdlib:
        json.loads(body)
    assert type(ours.value) is type(stdlib.value)


def test_an_integer_beyond_64_bits_stays_exact() -> None:
    big = 2**70 + 1
    assert fastjson.loads(f'{{"n": {big}}}'.encode()) == {"n": big}
    assert fastjson.loads(f"[{-big}]") == [-big]


@settings(max_examples=300, database=None, deadline=None)
@given(st.lists(st.floats() | st.integers(min_value=-(2**63), max_value=2**64 - 1)))
def test_dumps_numbers_reads_back_as_the_values(values: list[float | int]) -> None:
    assert _same(json.loads(fastjson.dumps_numbers(values)), values)


def test_dumps_numbers_takes_numpy_and_keeps_nan() -> None:
    assert json.loads(fastjson.dumps_numbers(np.array([0.5, 2.0]))) == [0.5, 2.0]
    assert fastjson.dumps_numbers((1.0, math.inf, math.nan)) == "[1.0, Infinity, NaN]"
    with pytest.raises(TypeError):
        fastjson.dumps_numbers([object()])


@pytest.mark.parametrize(
    "value", [0, -7, 2**70, True, None, 1.5, "seven", ["a", 1], {"digit": 3}, float("nan")]
)
def test_dumps_value_writes_the_stdlibs_text(value: Any) -> None:
    assert fastjson.dumps_value(value) == json.dumps(value)


def test_dumps_value_refuses_what_the_stdlib_refuses() -> None:
    with pytest.raises(ValueError):
        fastjson.dumps_value(float("inf"), allow_nan=False)
    with pytest.raises(TypeError):
        fastjson.dumps_value(object())
