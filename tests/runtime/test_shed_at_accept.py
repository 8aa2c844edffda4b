"""Shedding a new connection's first request from the accept callback (real sockets)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime.server.limits import ConcurrencyLimiter
from runtime.server.worker import ShedAtAccept, shed_at_accept
from tests.fixtures.servers import ServerProcess
from tests.fixtures.waiting import wait_for
from tests.runtime.test_app import app_for

PKG = "tests.runtime.userfns"
CE = "ce-specversion: 1.0\r\nce-id: {id}\r\nce-source: /t\r\nce-type: test.in\r\n"


def _post(id: str, body: bytes = b"{}", extra: str = "") -> bytes:
    head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
    return (head + CE.format(id=id) + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.fixture
def full() -> Iterator[Callable[[bytes], tuple[ShedAtAccept | None, bytes]]]:
    """shed_at_accept against an app whose one slot is taken and which has no queue: it
    gets a socket with ``raw`` already sent; answers its result and what the peer got."""
    app = app_for("echo_inference", "summer")
    app.limiter = ConcurrencyLimiter(limit=1, queue_depth=0, timeout_s=1)
    pairs: list[tuple[socket.socket, socket.socket]] = []

    def run(raw: bytes) -> tuple[ShedAtAccept | None, bytes]:
        server, client = socket.socketpair()
        pairs.append((server, client))
        if raw:
            client.sendall(raw)
        result = shed_at_accept(app, server)
        client.settimeout(0.0)
        try:
            got = client.recv(65536)
        except BlockingIOError:
            got = b""
        return result, got

    with app.limiter.slot():
        yield run
    for a, b in pairs:
        a.close()
        b.close()
    app.close()


@pytest.mark.unit
def test_a_complete_post_is_answered_at_once_and_consumed(
    full: Callable[[bytes], tuple[ShedAtAccept | None, bytes]],
) -> None:
    result, got = full(_post("a1"))
    assert result is not None and result.keep and result.unsent == b""
    assert got.startswith(b"HTTP/1.1 503 ") and b"Retry-After: " in got
    assert b"X-Request-Id: a1" in got and b"Connection: close" not in got
    result, got = full(_post("a2", extra="Connection: close\r\n"))
    assert result is not None and not result.keep and result.rest is None
    assert b"Connection: close" in got


@pytest.mark.unit
@pytest.mark.parametrize(
    "raw",
    [
        b"",  # nothing sent yet
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",  # probes are never shed
        _post("p")[:20],  # an incomplete head
        _post("p", b'{"x": [1]}')[:-3],  # an incomplete body
        _post("p") + _post("q"),  # pipelined: the normal path answers them in order
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        b"NOT HTTP\r\n\r\n",
    ],
)
def test_anything_else_is_left_unread_for_the_normal_path(
    full: Callable[[bytes], tuple[ShedAtAccept | None, bytes]], raw: bytes
) -> None:
    result, got = full(raw)
    assert result is None and got == b""


@pytest.mark.integration
def test_a_saturated_server_sheds_new_connections_and_serves_them_after_their_rest(
    serve: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    s = serve(f"{PKG}.slow_event", "slow", MLFN_QUEUE_DEPTH="0")
    s.wait_ready()
    host, port = s.url.removeprefix("http://").split(":")
    marks = [tmp_path / "a", tmp_path / "b"]
    slow = [
        threading.Thread(
            target=lambda m=m: s.call(
                "POST",
                "/",
                f'{{"ms": 2500, "mark": "{m}"}}'.encode(),
                headers={**_ce_headers(f"slow-{m.name}")},
            )
        )
        for m in marks
    ]
    for t in slow:
        t.start()
    wait_for(lambda: all(m.exists() for m in marks), 20, "two slow calls running")

    kept = socket.create_connection((host, int(port)), timeout=15)
    closing = socket.create_connection((host, int(port)), timeout=15)
    try:
        kept.sendall(_post("k1"))
        closing.sendall(_post("c1", extra="Connection: close\r\n"))
        first = _read_response(kept)
        assert first.startswith(b"HTTP/1.1 503 ") and b"Retry-After: " in first
        assert b"Connection: close" not in first and b'"overloaded"' in first
        last = _read_all(closing)
        assert last.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in last
        assert s.call("GET", "/healthz").status == 200  # probes answered meanwhile
        assert s.call("GET", "/readyz").status == 200
        for t in slow:
            t.join(20)
        # the connection shed at accept rested, then its next request is served
        kept.sendall(_post("k2"))
        second = _read_response(kept)
        assert second.startswith(b"HTTP/1.1 200 "), second
    finally:
        kept.close()
        closing.close()
    metrics = s.call("GET", "/metrics").body.decode()
    assert 'mlfn_requests_shed_total{function="slow",reason="queue_full"} 2.0' in metrics


def _ce_headers(id: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": id,
        "ce-source": "/t",
        "ce-type": "test.in",
        "Content-Type": "application/json",
    }


def _read_response(sock: socket.socket) -> bytes:
    """One response (its Content-Length body included) from a kept-alive connection."""
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        assert chunk, got
        got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    length = int(
        next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[
            1
        ]
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return head + b"\r\n\r\n" + body


def _read_all(sock: socket.socket) -> bytes:
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


@pytest.mark.unit
def test_between_requests_looks_for_connections_only_while_full_and_not_too_often(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from runtime.server import worker

    looks: list[int] = []
    full = [False]
    tracker = worker._Tracker(lambda: looks.append(1), lambda: full[0])
    tracker.between_requests()
    assert looks == []  # slots free: the hub's turns accept soon enough
    full[0] = True
    monkeypatch.setattr(worker, "ACCEPT_LOOK_S", 3600.0)
    tracker.between_requests()
    tracker.between_requests()
    assert looks == [1]  # once per interval, however many requests end in it
    monkeypatch.setattr(worker, "ACCEPT_LOOK_S", 0.0)
    tracker._next_look = 0.0
    tracker.between_requests()
    tracker.between_requests()
    assert looks == [1, 1, 1]
    worker._Tracker().between_requests()  # no listener to look at: nothing happens


@pytest.mark.unit
def test_accept_waiting_takes_a_waiting_connection_without_a_turn_of_the_hub() -> None:
    from runtime.server.worker import _defer_accept, worker_class

    seen: list[bytes] = []

    def at_accept(sock: socket.socket) -> ShedAtAccept:
        seen.append(getattr(sock, "_sock", sock).recv(100))
        return ShedAtAccept(False, b"", None)  # answered here: the connection closes

    loop = worker_class().accept_loop
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)  # as gevent's listening sockets are
        _defer_accept(listener)
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0
        server = loop(listener, handle=lambda *a: None)
        server.at_accept = at_accept
        loop.accept_waiting()  # not accepting yet: nothing to look at
        server.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=5) as client:
                client.sendall(b"POST / HTTP/1.1\r\n")
                # TCP_DEFER_ACCEPT: queued for accept once its bytes are there
                wait_for(lambda: bool(loop.accept_waiting() or seen), 5, "the connection taken")
                assert seen == [b"POST / HTTP/1.1\r\n"]
                assert client.recv(10) == b""  # closed by do_handle, from this very call
            server.stop_accepting()
            with socket.create_connection(listener.getsockname(), timeout=5) as late:
                late.sendall(b"GET")
                loop.accept_waiting()  # a listener that stopped accepting is not looked at
                assert len(seen) == 1
        finally:
            server.close()


@pytest.mark.unit
@pytest.mark.parametrize("saturated", [True, False])
def test_a_connection_of_a_full_server_starts_at_once_a_calm_one_at_the_next_turn(
    saturated: bool,
) -> None:
    import gevent

    from runtime.server.worker import worker_class

    handled: list[bytes] = []
    loop = worker_class().accept_loop
    gevent.sleep(0)  # the hub runs, as in a worker (a greenlet that ends goes back to it)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        server = loop(listener, handle=lambda client, _: handled.append(client.recv(100)), spawn=10)
        server.saturated = lambda: saturated
        server.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=5) as client:
                client.sendall(b"POST / HTTP/1.1\r\n")
                wait_for(
                    lambda: bool(loop.accept_waiting() or handled) or _queued(server), 5, "taken"
                )
                # full: its greenlet ran here, before this call returned; calm: spawned
                assert handled == ([b"POST / HTTP/1.1\r\n"] if saturated else [])
                gevent.sleep(0.01)
                assert handled == [b"POST / HTTP/1.1\r\n"]
        finally:
            server.close()


def _queued(server: object) -> bool:
    """A connection was taken and its greenlet is waiting to start (spawned)."""
    pool = getattr(server, "pool", None)
    return pool is not None and len(pool) > 0
