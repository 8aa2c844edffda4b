"""Socket helpers the HTTP/1.1 worker and the h2c transport share."""

from __future__ import annotations

import socket
from collections.abc import Callable

__all__ = ["sender"]


def sender(sock: socket.socket) -> Callable[[bytes], None]:
    """``sock.sendall``, but under gevent one plain ``send`` on the OS socket first.

    gevent's ``sendall`` asks the kernel for the send buffer size (a system call) and
    slices the data in Python on every call; a reply of a few hundred bytes leaves in
    one ``send`` (the OS socket is non-blocking under gevent). What the kernel does not
    take at once goes through ``sendall``, which waits for room cooperatively.
    """
    raw = getattr(sock, "_sock", None)
    if raw is None or raw.gettimeout() != 0.0:  # a plain blocking socket (threads)
        return sock.sendall

    def send(data: bytes) -> None:
        try:
            sent = raw.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            sock.sendall(memoryview(data)[sent:])

    return send
