"""One closed-loop client, the same for HTTP/1.1 and gRPC (h2c): concurrency 1, fairly.

At concurrency 1 a request's latency is the server's time plus the client's, and the
two C generators differ: on the 2-core development machine h2load spends about
30-40 us more CPU per call than wrk (measured against stub servers on each
protocol), which the gRPC row would otherwise carry. This client sends prepared bytes
over one blocking socket and reads until the response is complete, the same few steps
for both protocols (for h2c: the request as one HEADERS and one DATA frame, HPACK
encoded once, the reply read up to its trailers), so a c=1 row compares servers.

:func:`interleaved` runs several such clients by turns, a short block of requests
each, so that every route sees the same machine: on a shared machine the load of
other work changes from second to second, and routes measured one after the other
would each get a different share of it.

Example:
    >>> calls = {"a": http_call("127.0.0.1", 8080, b"POST / HTTP/1.1\\r\\n...")}  # doctest: +SKIP
    >>> interleaved(calls, duration=6)["a"][0].rps  # doctest: +SKIP
    1042.0
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

from bench._load import LoadResult

__all__ = ["grpc_call", "http_call", "http_request_bytes", "interleaved"]

Call = Callable[[], bool]
"""One request, sent and answered: True when it succeeded."""

_FRAME = struct.Struct(">HBBBI")
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _SETTINGS, _PING, _WINDOW_UPDATE = 0, 1, 4, 6, 8
_END_STREAM, _END_HEADERS, _ACK = 0x1, 0x4, 0x1
_GRPC_OK = b"\x0bgrpc-status\x010"  # the server's literal trailer for status 0


def http_request_bytes(
    host: str, port: int, path: str, body: bytes, headers: dict[str, str]
) -> bytes:
    """One keep-alive ``POST`` with ``body``, as bytes on the wire."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def interleaved(
    calls: dict[str, Call],
    *,
    duration: float,
    warmup: float = 0.5,
    block: int = 20,
    cpu: Callable[[], float] | None = None,
) -> dict[str, tuple[LoadResult, float]]:
    """Each call by turns, ``block`` requests at a time, for about ``duration`` seconds
    in all (after ``warmup``, the same way): each one's result over its own time, and
    the ``cpu()`` seconds (the server's, say) spent during its blocks.
    """
    clock = time.perf_counter
    for call in calls.values():
        deadline = clock() + warmup / max(1, len(calls))
        while clock() < deadline:
            call()
    latencies: dict[str, list[float]] = {name: [] for name in calls}
    busy = dict.fromkeys(calls, 0.0)
    used = dict.fromkeys(calls, 0.0)
    errors = dict.fromkeys(calls, 0)
    stop_at = clock() + duration
    while clock() < stop_at:
        for name, call in calls.items():
            before = cpu() if cpu is not None else 0.0
            begun = clock()
            for _ in range(block):
                started = clock()
                if call():
                    latencies[name].append(clock() - started)
                else:
                    errors[name] += 1
            busy[name] += clock() - begun
            if cpu is not None:
                used[name] += cpu() - before
    return {
        name: (LoadResult.of_latencies(latencies[name], busy[name], errors[name]), used[name])
        for name in calls
    }


def http_call(host: str, port: int, request: bytes) -> Call:
    """``request`` (see :func:`http_request_bytes`) on one connection, per call."""
    sock = _connect(host, port)
    recv = sock.recv

    def call() -> bool:
        sock.sendall(request)
        buf = recv(65536)
        while (split := buf.find(b"\r\n\r\n")) < 0:
            buf += recv(65536)
        head = buf[:split]
        start = head.lower().find(b"content-length:")
        length = int(head[start + 15 : head.find(b"\r\n", start)]) if start >= 0 else 0
        have = len(buf) - split - 4
        while have < length:
            chunk = recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection mid-response")
            have += len(chunk)
        return head.startswith(b"HTTP/1.1 200")

    return call


def grpc_call(host: str, port: int, path: str, message: bytes) -> Call:
    """A unary call of ``path`` with ``message`` on one h2c connection, per call."""
    import hpack

    sock = _connect(host, port)
    window = (1 << 31) - 1
    sock.sendall(
        _PREFACE
        + _frame(_SETTINGS, 0, 0, struct.pack(">HI", 4, window))
        + _frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", window - 65535))
    )
    encoder = hpack.Encoder()
    fields = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", f"{host}:{port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    first, repeated = encoder.encode(fields), encoder.encode(fields)  # later blocks repeat
    data = struct.pack(">BI", 0, len(message)) + message
    # the request's two frames, written once: each call sets their stream id in place
    wire = bytearray(
        _frame(_HEADERS, _END_HEADERS, 1, repeated) + _frame(_DATA, _END_STREAM, 1, data)
    )
    data_at = 9 + len(repeated)
    state = {"sid": 1, "buf": b""}
    recv = sock.recv
    unpack = _FRAME.unpack_from
    sid_at = struct.Struct(">I").pack_into

    def call() -> bool:
        sid = state["sid"]
        state["sid"] = sid + 2
        if sid == 1:
            out = _frame(_HEADERS, _END_HEADERS, 1, first) + _frame(_DATA, _END_STREAM, 1, data)
        else:
            sid_at(wire, 5, sid)
            sid_at(wire, data_at + 5, sid)
            out = wire
        sock.sendall(out)
        buf = state["buf"]
        pos = 0
        while True:
            end = len(buf)
            while end - pos >= 9:
                hi, lo, kind, flags, stream = unpack(buf, pos)
                n = (hi << 8) | lo
                if end - pos - 9 < n:
                    break
                start, pos = pos + 9, pos + 9 + n
                if kind == _HEADERS and flags & _END_STREAM and stream == sid:
                    state["buf"] = buf[pos:]
                    return _GRPC_OK in buf[start:pos]
                if kind == _SETTINGS and not flags & _ACK:
                    sock.sendall(_frame(_SETTINGS, _ACK, 0))
                elif kind == _PING and not flags & _ACK:
                    sock.sendall(_frame(_PING, _ACK, 0, buf[start:pos]))
            chunk = recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection mid-call")
            buf = buf[pos:] + chunk
            pos = 0

    return call


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _FRAME.pack(n >> 8, n & 0xFF, kind, flags, stream) + payload
