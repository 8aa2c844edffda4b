"""HTTP/1.1 as clients send it, against mlfn's gevent worker (raw sockets)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from tests.fixtures.servers import ServerProcess

pytestmark = pytest.mark.integration

PKG = "tests.runtime.userfns"
CE = (
    "ce-specversion: 1.0\r\nce-id: {id}\r\nce-source: /t\r\nce-type: test.in\r\n"
    "Content-Type: application/json\r\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from tests.fixtures.servers import start_server

    s = start_server(
        f"{PKG}.events_fn", "echo", tmp_path_factory.mktemp("w"), {"MLFN_MAX_BODY_BYTES": "1000"}
    )
    s.wait_ready()
    yield s
    s.terminate()


def _exchange(s: ServerProcess, raw: bytes, until: Callable[[bytes], bool]) -> bytes:
    host, port = s.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(raw)
        got = b""
        while not until(got):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def _post(id: str, body: bytes, extra: str = "", version: str = "1.1") -> bytes:
    head = f"POST / HTTP/{version}\r\nHost: x\r\n" + CE.format(id=id) + extra
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def test_pipelined_requests_are_answered_in_order(server: ServerProcess) -> None:
    raw = _post("p1", b'{"a": 1}') + _post("p2", b'{"a": 2}')
    got = _exchange(server, raw, lambda b: b.count(b"HTTP/1.1 200") >= 2)
    assert got.count(b"HTTP/1.1 200 OK") == 2
    assert got.index(b'"of": "p1"') < got.index(b'"of": "p2"')


def test_http10_closes_unless_keep_alive_is_asked(server: ServerProcess) -> None:
    got = _exchange(server, _post("h", b"{}", version="1.0"), lambda b: False)
    assert got.startswith(b"HTTP/1.1 200") and b"Connection: close" in got
    got = _exchange(
        server,
        _post("k", b"{}", "Connection: keep-alive\r\n", version="1.0"),
        lambda b: b"\r\n\r\n" in b and b.rstrip().endswith(b"}"),
    )
    assert b"Connection: keep-alive" in got


def test_expect_100_continue_and_chunked_bodies(server: ServerProcess) -> None:
    head = "POST / HTTP/1.1\r\nHost: x\r\n" + CE.format(id="c") + "Expect: 100-continue\r\n"
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((head + "Content-Length: 8\r\n\r\n").encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b'{"a": 1}')
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    chunked = head.replace("Expect: 100-continue\r\n", "") + "Transfer-Encoding: chunked\r\n\r\n"
    raw = chunked.encode() + b'4\r\n{"a"\r\n4\r\n: 1}\r\n0\r\n\r\n'
    got = _exchange(server, raw, lambda b: b'"seen": {"a": 1}' in b)
    assert got.startswith(b"HTTP/1.1 200") and b'"seen": {"a": 1}' in got


def test_bad_and_oversized_requests_get_a_json_error_and_close(server: ServerProcess) -> None:
    got = _exchange(server, b"NOT HTTP AT ALL\r\n\r\n", lambda b: False)
    assert got.startswith(b"HTTP/1.1 400") and b'"error"' in got and b"Connection: close" in got
    got = _exchange(server, _post("big", b"x" * 2000), lambda b: False)
    assert got.startswith(b"HTTP/1.1 413") and b"MLFN_MAX_BODY_BYTES" in got
    chunk = b"7d0\r\n" + b"x" * 2000 + b"\r\n0\r\n\r\n"
    raw = (
        "POST / HTTP/1.1\r\nHost: x\r\n" + CE.format(id="c") + "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    got = _exchange(server, raw + chunk, lambda b: False)
    assert got.startswith(b"HTTP/1.1 413")
    huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 70_000 + b"\r\n\r\n"
    got = _exchange(server, huge, lambda b: False)
    assert got.startswith(b"HTTP/1.1 431")


def test_head_has_the_length_but_no_body(server: ServerProcess) -> None:
    got = _exchange(
        server, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", lambda b: b"\r\n\r\n" in b
    )
    head, _, rest = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 15" in head and rest == b""
