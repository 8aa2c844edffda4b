"""The loop that makes first delivery attempts: keep-alive reuse, stale connections, timeouts."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from eventing.delivery import Response, http_target
from eventing.fastpath import AsyncPoster
from runtime.events import HttpMessage

pytestmark = pytest.mark.unit

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class _Sink:
    """A raw HTTP sink: answers ``answers`` requests per connection, then closes it
    (``None``: never answers)."""

    def __init__(self, answers: int | None) -> None:
        self.answers = answers
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.requests = 0
        self._stop = False
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        served = 0
        buf = b""
        try:
            while self.answers is None or served < self.answers:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                self.requests += 1
                if self.answers is not None:
                    conn.sendall(OK)
                    served += 1
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            if self.answers is not None:
                conn.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for c in self._conns:
            c.close()


@pytest.fixture
def poster() -> Iterator[AsyncPoster]:
    with AsyncPoster("test-fast") as p:
        yield p


def _post(poster: AsyncPoster, port: int, timeout: float | None = 5.0) -> Response:
    got: list[Response] = []
    done = threading.Event()

    def finished(r: Response) -> None:
        got.append(r)
        done.set()

    target = http_target(f"http://127.0.0.1:{port}/")
    assert target is not None
    poster.post(target, HttpMessage({"ce-id": "1"}, b"{}"), timeout, finished)
    assert done.wait(10), "no callback"
    return got[0]


def test_connections_are_kept_alive_and_a_stale_one_is_replaced(poster: AsyncPoster) -> None:
    sink = _Sink(answers=2)  # closes each connection after two answers
    try:
        for _ in range(5):
            r = _post(poster, sink.port)
            assert r.ok and r.body == b"ok"
        # 5 requests on connections that each took 2, and no attempt failed on the way
        assert sink.requests == 5 and sink.connections == 3
    finally:
        sink.close()


def test_a_sink_that_never_answers_times_out(poster: AsyncPoster) -> None:
    sink = _Sink(answers=None)
    try:
        r = _post(poster, sink.port, timeout=0.3)
        assert r.status is None and "no response in 0.3s" in (r.error or "")
    finally:
        sink.close()


def test_a_refused_connection_is_a_failed_attempt(poster: AsyncPoster) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here once closed
    r = _post(poster, port)
    assert r.status is None and r.error


def test_a_header_with_a_line_break_is_refused_before_sending(poster: AsyncPoster) -> None:
    target = http_target("http://127.0.0.1:1/")
    assert target is not None
    with pytest.raises(ValueError, match="line break"):
        poster.post(target, HttpMessage({"ce-id": "1\r\nx: y"}, b""), 1.0, lambda r: None)
