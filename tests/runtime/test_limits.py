"""containerConcurrency: excess requests wait in a bounded queue, then get 503 + Retry-After."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mlfn.settings import Settings
from runtime.registry import discover
from runtime.server import create_app
from runtime.server.errors import Overloaded
from runtime.server.limits import ConcurrencyLimiter
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
        assert third.headers["retry-after"] == "30"
        assert "containerConcurrency 1" in third.json()["error"]["message"]
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


@pytest.mark.unit
def test_unlimited_when_container_concurrency_is_0() -> None:
    lim = ConcurrencyLimiter(0, queue_depth=0, timeout_s=1)
    with lim.slot(), lim.slot():
        assert lim.running == 0
    one = ConcurrencyLimiter(1, queue_depth=0, timeout_s=1)
    with one.slot(), pytest.raises(Overloaded, match="queue depth 0"), one.slot():
        pass
