"""`mlfn serve` with several worker processes: every mode, one exact limit, a clean drain."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime import events as codec
from tests.fixtures.servers import Reply, ServerProcess
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.integration

PKG = "tests.runtime.userfns"
Serve = Callable[..., ServerProcess]


def _send(s: ServerProcess, data: Any, id: str = "ev") -> Reply:
    msg = codec.to_http_binary(codec.new_event("test.in", "/t", data, id=id))
    return s.call("POST", "/", msg.body, headers=msg.headers)


def _pid(r: Reply) -> int:
    assert r.status == 200, r.body
    data = codec.from_http_message(r.headers, r.body).get_data()
    return int(data["pid"])


def test_two_workers_serve_every_mode_and_share_one_exact_limit(
    serve: Serve, tmp_path: Path
) -> None:
    s = serve(f"{PKG}.slow_event", "slow", MLFN_WORKERS="2", MLFN_QUEUE_DEPTH="0")
    s.wait_ready()  # /readyz: 200 only once both workers are ready

    # binary, structured and batch mode, each answered with its reply
    assert _pid(_send(s, {"n": 1})) > 0
    st = codec.to_http_structured(codec.new_event("test.in", "/t", {"n": 2}, id="st"))
    assert _pid(s.call("POST", "/", st.body, headers=st.headers)) > 0
    batch = codec.to_http_batch([codec.new_event("test.in", "/t", {"n": i}) for i in range(3)])
    r = s.call("POST", "/", batch.body, headers=batch.headers)
    assert r.status == 200 and len(codec.from_http_batch(r.body)) == 3

    # both processes serve (each call is a fresh connection, accepted by either worker)
    pids: set[int] = set()
    wait_for(lambda: pids.add(_pid(_send(s, {}))) or len(pids) >= 2, 30, "both workers")

    # containerConcurrency 2 and no queue, over the whole server: with two calls running
    # (in one worker or in two), a third is refused at once, whichever worker takes it
    marks = [tmp_path / "a", tmp_path / "b"]
    replies: list[Reply] = []
    threads = [
        threading.Thread(target=lambda m=m: replies.append(_send(s, {"ms": 3000, "mark": str(m)})))
        for m in marks
    ]
    for t in threads:
        t.start()
    wait_for(lambda: all(m.exists() for m in marks), 20, "two slow calls running")
    refused = [_send(s, {}, id=f"x{i}") for i in range(4)]
    assert [r.status for r in refused] == [503] * 4, [r.body for r in refused]
    assert refused[0].json()["error"]["code"] == "overloaded"
    for t in threads:
        t.join(20)
    assert sorted(r.status for r in replies) == [200, 200]
    assert _pid(_send(s, {})) > 0  # the slots came back


def test_sigterm_drains_every_worker_then_exits_0(serve: Serve, tmp_path: Path) -> None:
    s = serve(f"{PKG}.slow_event", "slow", MLFN_WORKERS="2", MLFN_DRAIN_SECONDS="10")
    s.wait_ready()
    mark = tmp_path / "running"
    result: dict[str, Reply] = {}
    t = threading.Thread(
        target=lambda: result.setdefault("r", _send(s, {"ms": 1500, "mark": str(mark)}))
    )
    t.start()
    wait_for(mark.exists, 20, "the slow call to run")
    assert s.terminate(timeout=15) == 0
    t.join(10)
    assert _pid(result["r"]) > 0
