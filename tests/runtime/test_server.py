"""`mlfn serve` for real: gunicorn in a subprocess on a free loopback port."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from runtime import events
from tests.fixtures.servers import ServerProcess
from tests.fixtures.servers import wait_for_server as wait_for

pytestmark = pytest.mark.integration

PKG = "tests.runtime.userfns"
Serve = Callable[..., ServerProcess]


def _in_flight(server: ServerProcess) -> float:
    text = server.call(path="/metrics").body.decode()
    line = next(x for x in text.splitlines() if x.startswith("mlfn_requests_in_flight{"))
    return float(line.rsplit(" ", 1)[1])


def test_every_bad_input_gets_its_status_and_the_server_keeps_serving(serve: Serve) -> None:
    s = serve(f"{PKG}.echo_inference", "summer", MLFN_MAX_BODY_BYTES="2000")
    s.wait_ready()
    ok = s.call("POST", "/", {"x": [1, 2]}, headers={"X-Request-Id": "req-42"})
    assert ok.status == 200 and ok.json() == {"total": 3.0, "batch": 1, "model_version": None}
    assert ok.headers["x-request-id"] == "req-42"

    cases: list[tuple[int, str, str, Any, dict[str, str]]] = [
        (400, "POST", "/", b"{not json", {"Content-Type": "application/json"}),
        (400, "POST", "/", {"x": "many"}, {}),
        (415, "POST", "/", b"x=1", {"Content-Type": "application/x-www-form-urlencoded"}),
        (413, "POST", "/", b"[" + b"1," * 2000 + b"1]", {"Content-Type": "application/json"}),
        (405, "GET", "/", None, {}),
        (405, "DELETE", "/healthz", None, {}),
        (404, "GET", "/no/such/route", None, {}),
        (404, "POST", "/v2/models/nope/infer", {"inputs": []}, {}),
        (500, "POST", "/", {"x": [1], "fail": True}, {}),
    ]
    for status, method, path, body, headers in cases:
        r = s.call(method, path, body, headers=headers)
        assert r.status == status, (status, method, path, r.body)
        assert r.headers["content-type"] == "application/json"
        err = r.json()["error"]
        assert set(err) >= {"code", "message", "id"} and "Traceback" not in r.body.decode()
        if status == 400 and body == {"x": "many"}:
            assert err["fields"][0]["field"] == "x"
        if status == 413:
            assert "MLFN_MAX_BODY_BYTES" in err["message"]
        if status == 500:
            error_id = err["id"]
    assert s.call("POST", "/", {"x": [5]}).json()["total"] == 5.0  # still serving

    logs = s.logs()
    crash = next(rec for rec in logs if rec.get("error_id") == error_id)
    assert crash["level"] == "error" and "RuntimeError: boom" in crash["exception"]
    assert crash["request_id"] and crash["function"] == "summer"

    metrics = s.call(path="/metrics").body.decode()
    assert 'mlfn_requests_total{code="500",function="summer"} 1.0' in metrics
    assert 'mlfn_requests_total{code="413",function="summer"} 1.0' in metrics
    assert 'phase="ready"' in metrics


def test_concurrent_requests_are_batched(serve: Serve) -> None:
    s = serve(f"{PKG}.echo_inference", "summer")
    s.wait_ready()
    with ThreadPoolExecutor(12) as pool:
        replies = list(
            pool.map(lambda i: s.call("POST", "/", {"x": [i], "work_ms": 30}), range(24))
        )
    assert all(r.status == 200 for r in replies)
    assert sorted(r.json()["total"] for r in replies) == [float(i) for i in range(24)]
    assert max(r.json()["batch"] for r in replies) > 1  # coalesced while the model was busy


def test_sigterm_drains_in_flight_requests_then_exits_0(serve: Serve) -> None:
    s = serve(f"{PKG}.echo_inference", "summer", MLFN_DRAIN_SECONDS="10")
    s.wait_ready()
    result: dict[str, Any] = {}

    def slow() -> None:
        result["reply"] = s.call("POST", "/", {"x": [7], "work_ms": 1500})

    t = threading.Thread(target=slow)
    t.start()
    wait_for(lambda: _in_flight(s) >= 2, 10, "the slow request to be in flight")
    assert s.terminate(timeout=15) == 0
    t.join(10)
    assert result["reply"].status == 200 and result["reply"].json()["total"] == 7.0
    host, port = s.url.removeprefix("http://").split(":")
    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=2):
        pass


def test_event_function_over_http(serve: Serve) -> None:
    s = serve(f"{PKG}.events_fn", "echo")
    s.wait_ready()
    msg = events.to_http_binary(events.new_event("test.in", "/t", {"k": "v"}, id="ev-9"))
    r = s.call("POST", "/", msg.body, headers=msg.headers)
    assert r.status == 200 and r.headers["ce-type"] == "test.echoed"
    assert events.from_http_message(r.headers, r.body).get_data() == {
        "seen": {"k": "v"},
        "of": "ev-9",
    }
    batch = events.to_http_batch([events.new_event("test.in", "/t", {"n": 1})])
    r = s.call("POST", "/", batch.body, headers=batch.headers)
    assert r.status == 200 and len(events.from_http_batch(r.body)) == 1
    assert s.call("POST", "/", {"plain": "json"}).status == 415


def test_plain_functions_framework_http_function_is_served(serve: Serve) -> None:
    s = serve(f"{PKG}.plain_http", "hello")
    s.wait_ready()
    r = s.call("GET", "/?name=knative")
    assert r.status == 200 and r.body == b"hello knative"
    r = s.call("GET", "/?fail=1")
    assert r.status == 500 and "RuntimeError" in r.json()["error"]["message"]
    assert s.call(path="/healthz").status == 200
