"""``sockets.sender``: one plain send when the kernel takes it all, gevent's sendall for the rest."""

from __future__ import annotations

import socket

import pytest

from runtime.server.sockets import sender

pytestmark = pytest.mark.unit


def test_a_plain_socket_gets_its_own_sendall() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert sender(a) == a.sendall


@pytest.mark.parametrize("size", [100, 8 * 1024 * 1024])
def test_under_gevent_every_byte_arrives_in_order(size: int) -> None:
    gevent = pytest.importorskip("gevent")
    from gevent import socket as gsocket

    a, b = gsocket.socketpair()
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    got = bytearray()

    def read() -> None:
        while len(got) < size:
            chunk = b.recv(65536)
            if not chunk:
                return
            got.extend(chunk)
            gevent.sleep(0)  # a slow reader: the sender's buffer fills

    with a, b:
        send = sender(a)
        assert send != a.sendall  # the one-send path (gevent's socket wraps an OS one)
        reader = gevent.spawn(read)
        send(data)
        reader.join(timeout=30)
    assert bytes(got) == data
