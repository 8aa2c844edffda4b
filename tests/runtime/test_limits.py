"""containerConcurrency: excess requests wait in a bounded queue, then get 503 + Retry-After."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mlfn.settings import Settings
from runtime.registry import discover
from runtime.server import create_app
from runtime.server.errors import Overloaded
from runtime.server.limits import (
    MAX_RETRY_AFTER_S,
    RETRY_AFTER_S,
    SHED_SHARE,
    ConcurrencyLimiter,
    Paused,
    ShedReport,
)
from tests.fixtures.servers import InProcessServer
from tests.fixtures.servers import wait_for_server as wait_for
from tests.runtime.userfns import gated

pytestmark = pytest.mark.integration


def _server(start: Callable[[Any], InProcessServer], **settings: Any) -> InProcessServer:
    gated.GATE = threading.Event()  # fresh gate and counter for each test
    gated.ENTERED = threading.Semaphore(0)
    fn = discover("tests.runtime.userfns.gated").get("gated")
    app = create_app(fn, Settings().updated(server=settings))
    assert app.wait_ready(5)
    return start(app)


def test_excess_requests_queue_then_get_503_with_retry_after(
    wsgi_server: Callable[[Any], InProcessServer],
) -> None:
    s = _server(wsgi_server, queue_depth=1, queue_timeout_seconds=30)
    limiter = s.app.limiter
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(s.call, "POST", "/", {"n": 1})
        assert gated.ENTERED.acquire(timeout=5)  # running: the one slot is taken
        second = pool.submit(s.call, "POST", "/", {"n": 2})
        wait_for(lambda: limiter.waiting == 1, 5, "the second request to queue")
        third = s.call("POST", "/", {"n": 3})
        assert third.status == 503
        assert third.headers["retry-after"] == "1"
        assert "containerConcurrency 1" in third.json()["error"]["message"]
        assert limiter.full
        gated.GATE.set()
        assert first.result(5).json()["n"] == 1
        assert second.result(5).json()["n"] == 2
    assert s.call("GET", "/healthz").status == 200


def test_a_queued_request_times_out_with_503(wsgi_server: Callable[[Any], InProcessServer]) -> None:
    s = _server(wsgi_server, queue_depth=4, queue_timeout_seconds=0.2)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(s.call, "POST", "/", {"n": 1})
        assert gated.ENTERED.acquire(timeout=5)
        r = s.call("POST", "/", {"n": 2})
        assert r.status == 503 and "MLFN_QUEUE_TIMEOUT_SECONDS" in r.json()["error"]["message"]
        gated.GATE.set()
        assert first.result(5).status == 200
    metrics = s.call("GET", "/metrics").body.decode()
    assert 'mlfn_requests_shed_total{function="gated",reason="queue_timeout"} 1.0' in metrics


@pytest.mark.unit
def test_unlimited_when_container_concurrency_is_0() -> None:
    lim = ConcurrencyLimiter(0, queue_depth=0, timeout_s=1)
    with lim.slot(), lim.slot():
        assert lim.running == 0
    one = ConcurrencyLimiter(1, queue_depth=0, timeout_s=1)
    with one.slot(), pytest.raises(Overloaded, match="queue depth 0"), one.slot():
        pass


@pytest.mark.unit
def test_full_says_whether_the_next_request_is_shed() -> None:
    lim = ConcurrencyLimiter(1, queue_depth=1, timeout_s=1)
    assert not lim.full
    with lim.slot():
        assert not lim.full  # the queue has room
        lim._waiting = 1  # one queued (as a blocked thread would be)
        assert lim.full
        lim._waiting = 0
    assert not ConcurrencyLimiter(0, queue_depth=0, timeout_s=1).full


@pytest.mark.unit
def test_shedding_is_counted_always_and_logged_once_per_interval() -> None:
    now = [100.0]
    counted: list[str] = []
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("test.shed")
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        report = ShedReport(counted.append, logger, interval_s=10, clock=lambda: now[0])
        err = ConcurrencyLimiter(1, 0, 1).overloaded()
        for _ in range(500):
            report.shed(err)
        now[0] += 9.9
        report.shed(err)
        assert len(counted) == 501 and set(counted) == {"queue_full"}
        assert len(records) == 1 and records[0].shed == 1  # type: ignore[attr-defined]
        now[0] += 0.2
        report.shed(err)
        assert len(records) == 2 and records[1].shed == 501  # type: ignore[attr-defined]
        assert "mlfn_requests_shed_total" in records[1].getMessage()
    finally:
        logger.removeHandler(handler)


def _full_app(rest: Any = None) -> Any:
    fn = discover("tests.runtime.userfns.gated").get("gated")
    app = create_app(fn, Settings().updated(server={"queue_depth": 0}))
    assert app.wait_ready(5)
    app.limiter._running = 1  # the one slot is taken
    app._rest = rest
    return app


class _Unreadable:
    def read(self, n: int = -1) -> bytes:
        raise AssertionError("a shed request's body was read")


@pytest.mark.unit
def test_a_shed_request_is_answered_before_its_body_is_read() -> None:
    app = _full_app()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "CONTENT_LENGTH": "9",
        "CONTENT_TYPE": "application/json",
        "HTTP_X_REQUEST_ID": "r-1",
        "wsgi.input": _Unreadable(),
    }
    seen: list[Any] = []
    body = b"".join(app(environ, lambda status, headers: seen.extend([status, dict(headers)])))
    assert seen[0] == "503 Service Unavailable"
    assert seen[1]["Retry-After"] == "1" and seen[1]["X-Request-Id"] == "r-1"
    assert json.loads(body)["error"]["code"] == "overloaded"
    # probes are never shed
    probe = {**environ, "REQUEST_METHOD": "GET", "PATH_INFO": "/healthz", "CONTENT_LENGTH": ""}
    assert b"".join(app(probe, lambda *a: None)) == b'{"status":"ok"}'


@pytest.mark.unit
def test_under_gevent_a_shed_answer_rests_its_connection() -> None:
    slept: list[float] = []
    app = _full_app(rest=slept.append)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "wsgi.input": _Unreadable()}
    out = app(environ, lambda *a: None)
    assert isinstance(out, Paused)
    assert b"".join(out) and slept == []  # the answer goes out first ...
    out.close()  # ... then gunicorn closes the body: the connection rests
    assert slept == [float(RETRY_AFTER_S)] and app.limiter.resting == 0


@pytest.mark.unit
def test_retry_after_spreads_resting_connections_over_the_completion_rate() -> None:
    now = [50.0]
    lim = ConcurrencyLimiter(100, queue_depth=256, timeout_s=10, clock=lambda: now[0])
    assert lim.retry_after() == RETRY_AFTER_S  # nothing rests yet
    for _ in range(3):
        with lim.slot():
            pass
    now[0] += 0.5
    assert lim.completion_rate() == 6.0  # in the current window
    now[0] += 0.5
    assert lim.completion_rate() == 3.0  # the window closed
    pacer = lim.pacer
    pacer._rate, pacer._completed = 1000.0, 0  # 1,000 completions a second: 100 sheds a second
    pacer.resting = 599
    assert SHED_SHARE == 0.1
    assert lim.retry_after() == 6  # 600 resting connections come back over 6 s
    pacer._rate = 5.0  # a starved server: at most 1 shed a second, but never beyond the ceiling
    assert lim.retry_after() == MAX_RETRY_AFTER_S


def test_a_shed_answer_keeps_its_connection_usable(serve: Callable[..., Any]) -> None:
    """Under gunicorn's gevent worker: the unread body of a shed request is skipped, the
    connection rests, and the next request on it is answered (framing intact); a request
    that waits for ``100 Continue`` is answered 503 before its body is sent."""
    server = serve("tests.runtime.userfns.slow", "slow", MLFN_QUEUE_DEPTH="0")
    server.wait_ready()
    host, port = server.url.removeprefix("http://").split(":")
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(server.call, "POST", "/", {"ms": 3000})
        # in flight means admitted: nothing yields between the two under gevent
        wait_for(lambda: _in_flight(server) >= 1, 10, "the slow request to run")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        body = json.dumps({"ms": 0, "pad": "x" * 5000})
        conn.request("POST", "/", body, {"Content-Type": "application/json"})
        first = conn.getresponse()
        assert first.status == 503 and first.getheader("Retry-After")
        assert json.loads(first.read())["error"]["code"] == "overloaded"
        conn.request("POST", "/", body, {"Content-Type": "application/json"})  # same socket
        second = conn.getresponse()
        assert second.status in (200, 503)
        assert json.loads(second.read())  # a whole JSON answer: the framing held
        conn.close()
        # a client waiting for 100 Continue is shed at once, and never sends the body
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            head = (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "X-Request-Id: shed-early\r\nExpect: 100-continue\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            sock.sendall(head.encode())
            got = b""
            while chunk := sock.recv(65536):
                got += chunk  # until the server closes: nothing more is read there
        assert got.startswith(b"HTTP/1.1 503") and b"100 Continue" not in got
        assert b"Retry-After: " in got and b"Connection: close" in got
        assert b"X-Request-Id: shed-early" in got
        assert busy.result(30).status == 200
    metrics = server.call(path="/metrics").body.decode()
    assert 'mlfn_requests_shed_total{function="slow",reason="queue_full"}' in metrics


def _in_flight(server: Any) -> float:
    text = server.call(path="/metrics").body.decode()
    line = next(x for x in text.splitlines() if x.startswith("mlfn_requests_in_flight{"))
    return float(line.rsplit(" ", 1)[1])


@pytest.mark.unit
def test_the_lean_worker_decides_to_shed_from_the_head_and_keeps_no_body() -> None:
    import httptools

    from runtime.server.worker import _Message

    full = [False]
    msg = _Message(10_000, lambda method: method == "POST" and full[0])
    msg.parser = parser = httptools.HttpRequestParser(msg)

    def post(n: int) -> bytes:
        return f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n".encode() + b"7" * n

    full[0] = True
    parser.feed_data(post(5000) + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    full[0] = False
    parser.feed_data(post(3))
    shed, probe, served = list(msg.complete)
    assert shed[0].body == b"" and shed[3] is True  # the body was skipped, not kept
    assert probe[0].path == "/healthz" and probe[3] is False  # probes are never shed
    assert served[0].body == b"777" and served[3] is False


@pytest.mark.unit
def test_a_saturated_worker_accepts_many_connections_per_turn_a_calm_one_one() -> None:
    from runtime.server.worker import SATURATED_ACCEPTS, worker_class

    lim = ConcurrencyLimiter(2, queue_depth=4, timeout_s=1.0)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        server = worker_class().accept_loop(listener, handle=lambda *a: None)
        server.saturated = lambda: lim.saturated
        assert server.max_accept == 100  # gevent's default: one worker takes them all
        server.max_accept = 1  # what gunicorn sets with several workers: they share them out
        with lim.slot():
            assert server.max_accept == 1
            with lim.slot():  # every slot taken: a burst waits no longer than a turn
                assert server.max_accept == SATURATED_ACCEPTS > 1
        assert server.max_accept == 1
