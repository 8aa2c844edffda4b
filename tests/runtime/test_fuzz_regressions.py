"""Inputs the HTTP fuzzer (test_fuzz_http.py) found answered 5xx or slowly; each is a 4xx now."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlfn.settings import Settings
from runtime.registry import discover
from runtime.server import App, Request, create_app

pytestmark = pytest.mark.unit

PKG = "tests.runtime.userfns"


def _app(module: str, name: str) -> App:
    fn = discover(f"{PKG}.{module}").get(name)
    app = create_app(fn, Settings(), model_opener=lambda f, s: None)
    assert app.wait_ready(5)
    return app


def _post(app: App, path: str, body: Any, ctype: str = "application/json") -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return app.handle(Request("POST", path, {"content-type": ctype}, raw))


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("application/cloudevents+json", {"specversion": []}),  # TypeError in the SDK
        ("application/cloudevents+json", {"specversion": {"a": 1}}),
        ("application/cloudevents-batch+json", [{"specversion": ["1.0"]}]),
    ],
)
def test_a_cloudevent_the_sdk_trips_over_is_a_400(ctype: str, body: Any) -> None:
    r = _post(_app("fuzz_events", "summary"), "/", body, ctype)
    assert r.status == 400, r.body
    assert r.json()["error"]["message"].startswith(("invalid CloudEvent", "batch item 0"))


@pytest.mark.parametrize(
    "shape", [[10**9, 0], [1, 10**12, 0], [2**64], [1] * 33, [-1, 2], ["3"], True]
)
def test_an_oip_shape_that_does_not_fit_its_data_is_a_quick_400(shape: Any) -> None:
    # [10**9, 0] holds no values: it used to build a billion empty rows before answering
    tensor = {"name": "x", "shape": shape, "datatype": "FP64", "data": []}
    r = _post(_app("echo_inference", "summer"), "/v2/models/summer/infer", {"inputs": [tensor]})
    assert r.status == 400, r.body
    assert "shape" in r.json()["error"]["message"]


@pytest.mark.parametrize("length", ["ten", "-5"])
def test_a_content_length_that_is_not_a_number_is_a_400(length: str) -> None:
    app = _app("plain_http", "hello")
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "CONTENT_LENGTH": length}
    seen: list[str] = []
    body = b"".join(app(environ, lambda status, headers, *a: seen.append(status)))
    assert seen == ["400 Bad Request"], body
    assert "Content-Length" in json.loads(body)["error"]["message"]
