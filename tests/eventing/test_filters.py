"""Knative's trigger filter dialect: exact, prefix, suffix, all, any, not, legacy attributes."""

from __future__ import annotations

from typing import Any

import pytest

from eventing.errors import FilterError
from eventing.filters import compile_attributes, compile_filter, compile_trigger

pytestmark = pytest.mark.unit

EV: dict[str, Any] = {
    "type": "mlfn.features",
    "source": "/mlfn/preprocess",
    "id": "1",
    "specversion": "1.0",
    "subject": "digits",
    "myext": "blue",
}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([], True),
        ([{"exact": {"type": "mlfn.features"}}], True),
        ([{"exact": {"type": "mlfn.feature"}}], False),
        ([{"exact": {"TYPE": "mlfn.features"}}], True),  # attribute names are case-insensitive
        ([{"exact": {"type": "MLFN.features"}}], False),  # values are not
        ([{"exact": {"missing": "x"}}], False),
        ([{"exact": {"myext": "blue"}}], True),  # extensions too
        ([{"exact": {"type": "mlfn.features", "source": "/other"}}], False),
        ([{"prefix": {"type": "mlfn."}}], True),
        ([{"prefix": {"type": "features"}}], False),
        ([{"prefix": {"missing": "m"}}], False),
        ([{"suffix": {"source": "/preprocess"}}], True),
        ([{"suffix": {"source": "/predict"}}], False),
        ([{"suffix": {"missing": "x"}}], False),
        ([{"all": [{"prefix": {"type": "mlfn."}}, {"exact": {"subject": "digits"}}]}], True),
        ([{"all": [{"prefix": {"type": "mlfn."}}, {"exact": {"subject": "mnist"}}]}], False),
        ([{"any": [{"exact": {"type": "x"}}, {"suffix": {"type": ".features"}}]}], True),
        ([{"any": [{"exact": {"type": "x"}}, {"exact": {"type": "y"}}]}], False),
        ([{"not": {"exact": {"type": "x"}}}], True),
        ([{"not": {"prefix": {"type": "mlfn"}}}], False),
        ([{"not": {"not": {"exact": {"myext": "blue"}}}}], True),
        # top-level list: all must match
        ([{"prefix": {"type": "mlfn"}}, {"exact": {"myext": "red"}}], False),
        (
            [{"any": [{"all": [{"exact": {"myext": "blue"}}, {"not": {"exact": {"id": "2"}}}]}]}],
            True,
        ),
    ],
)
def test_filters_dialect(filters: list[dict[str, Any]], expected: bool) -> None:
    assert compile_filter(filters)(EV) is expected


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({}, True),
        ({"type": "mlfn.features"}, True),
        ({"type": "mlfn.features", "source": "/mlfn/preprocess"}, True),
        ({"type": "mlfn.features", "source": "/nope"}, False),
        ({"type": ""}, True),  # "" is Knative's "any value"
        ({"missing": ""}, True),  # ... even for an attribute the event lacks
        ({"missing": "x"}, False),
    ],
)
def test_legacy_attributes(attributes: dict[str, str], expected: bool) -> None:
    assert compile_attributes(attributes)(EV) is expected


def test_filters_take_precedence_over_attributes() -> None:
    match = compile_trigger([{"exact": {"type": "mlfn.features"}}], {"type": "other"})
    assert match(EV)
    assert not compile_trigger([], {"type": "other"})(EV)


def test_non_string_values_compare_as_text() -> None:
    assert compile_filter([{"exact": {"n": "3"}}])({"n": 3})


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ([{"exact": {"type": "a"}, "prefix": {"type": "b"}}], "exactly one of"),
        ([{"regex": {"type": "a"}}], "unknown filter dialect 'regex'"),
        ([{"cesql": "type = 'a'"}], "'cesql' dialect is not supported"),
        ([{"exact": {}}], "non-empty map"),
        ([{"exact": {"type": ""}}], "must be a non-empty string"),
        ([{"exact": {"type": 3}}], "must be a non-empty string"),
        ([{"all": []}], "non-empty list"),
        ([{"any": {"exact": {"a": "b"}}}], "non-empty list"),
        ([{"not": [{"exact": {"a": "b"}}]}], "exactly one of"),
        (["type=a"], "exactly one of"),
    ],
)
def test_invalid_filters_say_what_and_where(filters: list[Any], message: str) -> None:
    with pytest.raises(FilterError, match=message) as err:
        compile_filter(filters)
    assert "filters[0]" in str(err.value)


def test_nested_error_path() -> None:
    with pytest.raises(FilterError, match=r"filters\[0\]\.all\[1\]"):
        compile_filter([{"all": [{"exact": {"a": "b"}}, {"bogus": {}}]}])
