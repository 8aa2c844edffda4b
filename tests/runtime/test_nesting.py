"""A body nested too deeply is a 400 naming the limit, on every route and in every mode."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlfn.settings import Settings
from runtime.registry import discover
from runtime.server import App, Request, create_app, nesting
from runtime.server.errors import BadRequest
from runtime.server.nesting import check_depth, json_depth

pytestmark = pytest.mark.unit

PKG = "tests.runtime.userfns"
DEEP = b"[" * 5000
CE = {"ce-specversion": "1.0", "ce-id": "e1", "ce-type": "t", "ce-source": "/s"}


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=30,
)


@settings(max_examples=100, database=None, deadline=None)
@given(json_values, st.sampled_from(["utf-8", "utf-16", "utf-32"]), st.booleans())
def test_the_depth_is_what_a_parser_reaches(value: Any, encoding: str, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert json_depth(text.encode(encoding)) == _depth(value)


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b'{"a": [1, [2]], "b": "[[[["}', 3),
        (b'["\\\\", [[1]]]', 3),  # an escaped backslash, then the string ends
        (b'["\\\\\\"[[[", 1]', 1),  # an escaped quote keeps the string open
        (b'"[[[[', 0),  # an unterminated string: the parser never leaves it
        (b"[[1]] [[[[[[[", 2),  # after the first value a parser stops
        (b"[[[#[[[[", 3),  # ... and at a byte that is not JSON
        (b"\x89PNG[[[[[[[[[[", 0),  # binary data is not blamed for its brackets
        (b"\xef\xbb\xbf[[[]]]", 3),  # a byte-order mark
        (DEEP, 5000),
    ],
)
def test_depth_of_odd_bodies(body: bytes, depth: int) -> None:
    assert json_depth(body) == depth


def test_the_limit_is_inclusive_and_the_error_names_it() -> None:
    check_depth(b"[" * 64 + b"]" * 64, 64)
    with pytest.raises(BadRequest, match=r"nested deeper than 64 levels.*MLFN_MAX_JSON_DEPTH"):
        check_depth(b"[" * 65 + b"]" * 65, 64)


def _app(module: str, name: str, **overrides: Any) -> App:
    app = create_app(
        discover(f"{PKG}.{module}").get(name),
        Settings().updated(server=overrides),
        model_opener=lambda f, s: None,
    )
    assert app.wait_ready(5)
    return app


ROUTES = [
    ("echo_inference", "summer", "/", {"content-type": "application/json"}, DEEP),
    ("echo_inference", "summer", "/", {"content-type": "application/json"}, b'{"x":' + DEEP),
    ("echo_inference", "summer", "/v2/models/summer/infer", {}, b'{"inputs":' + DEEP),
    ("echo_inference", "summer", "/", {**CE, "content-type": "application/json"}, DEEP),
    ("events_fn", "echo", "/", {**CE, "content-type": "application/json"}, DEEP),
    ("events_fn", "echo", "/", {**CE, "content-type": "text/plain"}, DEEP),
    (
        "events_fn",
        "echo",
        "/",
        {"content-type": "application/cloudevents+json"},
        b'{"specversion": "1.0", "id": "1", "type": "t", "source": "/s", "data": ' + DEEP,
    ),
    (
        "events_fn",
        "echo",
        "/",
        {"content-type": "application/cloudevents-batch+json"},
        b'[{"specversion": "1.0", "id": "1", "type": "t", "source": "/s", "data": ' + DEEP,
    ),
]


@pytest.mark.parametrize(("module", "name", "path", "headers", "body"), ROUTES)
def test_every_route_answers_400_before_the_function_runs(
    module: str, name: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    app = _app(module, name)
    r = app.handle(Request("POST", path, headers, body))
    assert r.status == 400, r.body
    # the scan's message, not a decoder's: it ran before any parser (and the function)
    assert "nested deeper than 64 levels" in r.json()["error"]["message"]


def test_the_limit_is_a_setting() -> None:
    app = _app("events_fn", "echo", max_json_depth=100)
    nested = b"[" * 80 + b"]" * 80
    r = app.handle(Request("POST", "/", {**CE, "content-type": "application/json"}, nested))
    assert r.status == 200 and r.json()["seen"] is not None


structural_bytes = st.lists(
    st.sampled_from(
        [
            *(b"[", b"]", b"{", b"}", b'"', b"1", b",", b" ", b":", b"a", b"\\", b"#", b"\x00"),
            *(b"/", b"\xef\xbb\xbf", b"\xff\xfe", "é".encode()),
        ]
    ),
    max_size=60,
).map(b"".join)


@settings(max_examples=300, database=None, deadline=None)
@given(
    st.one_of(
        json_values.map(lambda v: json.dumps(v).encode()),
        json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode()),
        st.tuples(json_values, st.sampled_from(["utf-16", "utf-16-be", "utf-32"])).map(
            lambda ve: json.dumps(ve[0]).encode(ve[1])
        ),
        structural_bytes,
    )
)
def test_the_short_way_agrees_with_the_scan(body: bytes) -> None:
    short = nesting._short_depth(body)
    if short is not None:
        assert short == nesting._scanned_depth(body)


def test_a_body_of_numbers_takes_the_short_way() -> None:
    body = json.dumps({"instances": [[0.5] * 64] * 64, "probabilities": False}).encode()
    assert nesting._short_depth(body) == 3
    assert nesting._short_depth(b'["\\\\", [[1]]]') is None  # an escape: the scan decides


def test_a_cloudevents_batch_takes_the_short_way() -> None:
    event = {"specversion": "1.0", "id": "e-1", "source": "/mlfn/produce", "type": "t.v1"}
    batch = json.dumps([{**event, "data": {"features": [0.5] * 8}}] * 100).encode()
    assert nesting._short_depth(batch) == 4 == nesting._scanned_depth(batch)
    # a byte only a string may hold, outside one: the scan decides
    assert nesting._short_depth(b"[1]/") is None


def test_a_large_body_of_numbers_is_checked_the_short_way() -> None:
    shallow = json.dumps({"instances": [[0.5] * 64] * 200}).encode()
    check_depth(shallow, 3)
    with pytest.raises(BadRequest, match="nested deeper than 2 levels"):
        check_depth(shallow, 2)
    deep = b"[" * 3000 + b"1" + b"]" * 3000
    with pytest.raises(BadRequest, match=r"the body reaches 3000"):
        check_depth(deep, 64)
