"""The app in-process (App.handle): routes, the dispatch core, errors decided in one place."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

import pytest

from mlfn.settings import Settings
from runtime import events
from runtime.registry import discover
from runtime.server import App, Request, create_app

pytestmark = pytest.mark.unit

PKG = "tests.runtime.userfns"


@dataclass
class Loaded:
    name: str
    version: int
    model: Any = None


class FakeModel:
    def __init__(self) -> None:
        self.version = 3
        self.refreshed = 0
        self.stopped = False

    def start(self) -> None: ...

    def stop(self) -> None:
        self.stopped = True

    def current(self) -> Loaded:
        return Loaded("m", self.version)

    def refresh(self) -> bool:
        self.refreshed += 1
        self.version += 1
        return True

    @property
    def ready(self) -> bool:
        return True


def app_for(module: str, name: str, model: FakeModel | None = None, **settings: Any) -> App:
    fn = discover(f"{PKG}.{module}").get(name)
    app = create_app(fn, Settings().updated(server=settings), model_opener=lambda f, s: model)
    assert app.wait_ready(5)
    return app


def post(app: App, path: str, body: Any, ctype: str = "application/json", **headers: str) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return app.handle(Request("POST", path, {"content-type": ctype, **headers}, raw))


def get(app: App, path: str) -> Any:
    return app.handle(Request("GET", path, {}))


def test_json_route_answers_the_response_model_with_model_version() -> None:
    model = FakeModel()
    app = app_for("echo_inference", "summer", model)
    r = post(app, "/", {"x": [1, 2.5]})
    assert r.status == 200
    assert r.json() == {"total": 3.5, "batch": 1, "model_version": 3}
    many = post(app, "/summer", [{"x": [1]}, {"x": [2]}])
    assert [x["total"] for x in many.json()] == [1.0, 2.0]
    app.close()
    assert model.stopped


def test_schema_violations_are_400_naming_the_fields() -> None:
    app = app_for("echo_inference", "summer")
    r = post(app, "/", {"x": [], "work_ms": -1})
    assert r.status == 400
    err = r.json()["error"]
    assert err["code"] == "bad_request"
    assert {f["field"] for f in err["fields"]} == {"x", "work_ms"}
    assert "x: List should have at least 1 item" in err["message"]
    r = post(app, "/", [{"x": [1]}, {"y": 2}])
    assert "1.x: Field required" in r.json()["error"]["message"]
    r = post(app, "/", b"{nope")
    assert r.status == 400 and r.json()["error"]["message"].startswith("malformed JSON")


def test_each_http_error_has_its_status_and_a_short_json_body() -> None:
    app = app_for("echo_inference", "summer")
    assert post(app, "/", {"x": [1]}, ctype="text/plain").status == 415
    r = get(app, "/")
    assert r.status == 405 and r.headers["Allow"] == "POST"
    r = get(app, "/nowhere")
    assert r.status == 404 and "POST / (or /summer)" in r.json()["error"]["message"]
    assert set(r.json()["error"]) == {"code", "message", "id"}


def test_an_exception_in_the_function_is_a_500_with_an_id_that_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = app_for("echo_inference", "summer")
    with caplog.at_level(logging.ERROR, "mlfn.server"):
        r = post(app, "/", {"x": [1], "fail": True})
    assert r.status == 500
    err = r.json()["error"]
    assert "RuntimeError" in err["message"] and "boom" not in r.body.decode()
    assert "Traceback" not in r.body.decode()
    record = next(rec for rec in caplog.records if getattr(rec, "error_id", None) == err["id"])
    assert record.exc_info is not None
    assert post(app, "/", {"x": [1]}).status == 200  # keeps serving


def test_a_wrong_length_result_fails_the_request_clearly(caplog: pytest.LogCaptureFixture) -> None:
    app = app_for("wrong_length", "short")
    with caplog.at_level(logging.ERROR, "mlfn.server"):
        r = post(app, "/", {"x": 1})
    assert r.status == 500 and "BatchError" in r.json()["error"]["message"]
    assert "returned 0 results for a batch of 1" in caplog.text


def test_readiness_is_503_until_the_model_loads() -> None:
    fn = discover(f"{PKG}.echo_inference").get("summer")
    gate = threading.Event()

    def slow_open(f: Any, s: Any) -> FakeModel:
        assert gate.wait(5)
        return FakeModel()

    app = create_app(fn, Settings(), model_opener=slow_open)
    assert get(app, "/healthz").status == 200
    loading = get(app, "/readyz")
    assert loading.status == 503 and loading.json()["status"] == "not ready"
    assert get(app, "/v2/health/ready").status == 503
    r = post(app, "/", {"x": [1]})
    assert r.status == 503 and r.headers["Retry-After"] == "1"
    gate.set()
    assert app.wait_ready(5)
    assert get(app, "/readyz").status == 200


def test_a_failed_model_load_is_reported_on_readyz() -> None:
    fn = discover(f"{PKG}.echo_inference").get("summer")

    def broken(f: Any, s: Any) -> FakeModel:
        raise OSError("store is on fire")

    app = create_app(fn, Settings(), model_opener=broken)
    assert not app.wait_ready(5)
    r = get(app, "/readyz")
    assert r.status == 503 and "store is on fire" in r.json()["reason"]
    assert r.json()["status"] == "failed", "final, unlike the 503 while loading"


def test_oip_routes_and_tensors() -> None:
    app = app_for("echo_inference", "summer", FakeModel())
    assert get(app, "/v2/health/live").json() == {"live": True}
    assert get(app, "/v2/models/summer/ready").json() == {"name": "summer", "ready": True}
    meta = get(app, "/v2/models/summer").json()
    assert meta["inputs"][0] == {"name": "x", "datatype": "FP64", "shape": [-1, -1]}
    body = {
        "id": "q1",
        "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}],
    }
    r = post(app, "/v2/models/summer/infer", body)
    assert r.status == 200, r.body
    out = r.json()
    assert out["id"] == "q1" and out["model_version"] == "3" and out["model_name"] == "summer"
    assert out["outputs"][0] == {
        "name": "total",
        "datatype": "FP64",
        "shape": [2],
        "data": [3.0, 7.0],
    }
    assert get(app, "/v2/models/other").status == 404
    bad = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1]}]}
    r = post(app, "/v2/models/summer/infer", bad)
    assert r.status == 400 and "holds 4 values but data has 1" in r.json()["error"]["message"]


def test_a_cloudevent_to_an_inference_function_refreshes_the_model() -> None:
    model = FakeModel()
    app = app_for("echo_inference", "summer", model)
    msg = events.to_http_binary(
        events.new_event("mlfn.model.published", "/t", {"v": 4}, subject="m")
    )
    r = app.handle(Request("POST", "/", {k.lower(): v for k, v in msg.headers.items()}, msg.body))
    assert r.status == 202 and model.refreshed == 1
    assert post(app, "/", {"x": [1]}).json()["model_version"] == 4


def _binary(data: Any, id: str = "e1") -> Request:
    msg = events.to_http_binary(events.new_event("test.in", "/t", data, id=id))
    return Request("POST", "/", {k.lower(): v for k, v in msg.headers.items()}, msg.body)


def test_event_function_binary_structured_and_batch() -> None:
    app = app_for("events_fn", "echo")
    r = app.handle(_binary({"a": 1}, id="abc"))
    assert r.status == 200 and r.headers["ce-type"] == "test.echoed"
    assert r.headers["X-Request-Id"] == "abc"
    reply = events.from_http_message({k.lower(): v for k, v in r.headers.items()}, r.body)
    assert reply.get_data() == {"seen": {"a": 1}, "of": "abc"}

    s = events.to_http_structured(events.new_event("test.in", "/t", {"b": 2}))
    r = app.handle(Request("POST", "/", {k.lower(): v for k, v in s.headers.items()}, s.body))
    assert r.status == 200 and "ce-specversion" in {k.lower() for k in r.headers}

    batch = events.to_http_batch([events.new_event("test.in", "/t", {"n": i}) for i in range(3)])
    r = app.handle(Request("POST", "/", {"content-type": events.BATCH_CONTENT_TYPE}, batch.body))
    assert r.status == 200 and r.headers["content-type"] == events.BATCH_CONTENT_TYPE
    assert [e.get_data()["seen"]["n"] for e in events.from_http_batch(r.body)] == [0, 1, 2]

    assert app.handle(_binary({"drop": True})).status == 204


def test_event_errors_are_400_415_and_500() -> None:
    app = app_for("events_fn", "echo")
    r = post(app, "/", {"not": "an event"})
    assert r.status == 415 and "ce-specversion" in r.json()["error"]["message"]
    r = app.handle(Request("POST", "/", {"ce-specversion": "1.0", "ce-id": "x"}, b"{}"))
    assert r.status == 400 and "ce-source" in r.json()["error"]["message"]
    r = app.handle(Request("POST", "/", {"content-type": events.BATCH_CONTENT_TYPE}, b"{}"))
    assert r.status == 400 and "JSON array" in r.json()["error"]["message"]
    r = app.handle(_binary({"fail": True}))
    assert r.status == 500 and "ValueError" in r.json()["error"]["message"]


def test_plain_functions_framework_functions_run_unchanged() -> None:
    app = app_for("plain_http", "hello")
    r = app.handle(Request("GET", "/greet?name=ada", {}))
    assert r.status == 200 and r.body == b"hello ada"
    ce = app_for("plain_cloudevent", "on-event")
    from tests.runtime.userfns import plain_cloudevent

    assert ce.handle(_binary({"x": 1}, id="pce-1")).status == 204
    assert "pce-1" in plain_cloudevent.SEEN


def test_metrics_count_requests_batches_versions_and_cold_start() -> None:
    app = app_for("echo_inference", "summer", FakeModel())
    post(app, "/", {"x": [1]})
    post(app, "/", {"x": []})
    text = get(app, "/metrics").body.decode()
    assert 'mlfn_requests_total{code="200",function="summer"} 1.0' in text
    assert 'mlfn_requests_total{code="400",function="summer"} 1.0' in text
    assert 'mlfn_model_version{function="summer",model="m"} 3.0' in text
    assert 'mlfn_batch_size_count{function="summer"} 1.0' in text
    for phase in ("imports_done", "model_loaded", "ready"):
        assert f'phase="{phase}"' in text
    assert "mlfn_requests_in_flight" in text


def test_importing_the_server_stays_lean() -> None:
    """A forked instance imports the server first: gunicorn, Flask and the backends wait."""
    import subprocess
    import sys

    code = (
        "import sys, runtime.server; "
        "print(','.join(m for m in ('gunicorn', 'flask', 'sklearn', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_invalid_event_data_is_400_naming_the_field_so_it_is_dead_lettered() -> None:
    app = app_for("validating_event", "check")
    r = app.handle(_binary({"value": "high"}))
    assert r.status == 400
    assert "data.value" in json.dumps(r.json()["error"])
    r = app.handle(_binary({"value": -1}))
    assert r.status == 400 and "must not be negative" in r.json()["error"]["message"]
    assert app.handle(_binary({"value": 1})).status == 204
