"""The HTTP/2 loop that serves gRPC, against grpcio's own client (C-core), in-process.

A handler that echoes, fails or waits stands in for the inference service, so each test
shows one thing a client notices: replies larger than its flow-control window arrive
whole, metadata that changes per call is read per call (the header cache), sizes over the
limit and error messages map to gRPC statuses, and a stopping server finishes the calls
in flight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping

import grpc
import pytest

from runtime.server.grpc.h2c import H2Server, Reply
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.integration

LIMIT = 1 << 20


class Handler:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.waiting = 0
        self.hold = threading.Event()
        self.holding = 0

    def __call__(self, path: str, metadata: Mapping[str, str], message: bytes) -> Reply:
        rid = (("x-request-id", metadata.get("x-request-id", "")),)
        if path == "/t/Echo":
            return Reply(0, "", message[::-1], rid)
        if path == "/t/Big":
            return Reply(0, "", bytes(range(256)) * (int(message) // 256), rid)
        if path == "/t/Fail":
            return Reply(3, "ungültig: 100% wrong\nsecond line", None, rid)
        if path == "/t/Wait":
            self.waiting += 1
            self.release.wait(30)
            return Reply(0, "", b"done", rid)
        if path == "/t/Slow":
            time.sleep(0.02)
            return Reply(0, "", b"slow", rid)
        if path == "/t/Hold":
            self.holding += 1
            self.hold.wait(30)
            return Reply(0, "", b"held", rid)
        return Reply(12, f"Method not found: {path}")


@pytest.fixture
def served() -> Iterator[tuple[H2Server, Handler, grpc.Channel]]:
    handler = Handler()
    server = H2Server(handler, max_message=LIMIT)
    port = server.bind("127.0.0.1", 0)
    server.start()
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)]
    )
    try:
        yield server, handler, channel
    finally:
        handler.release.set()
        handler.hold.set()
        channel.close()
        server.stop(5.0)


def _call(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(method)  # raw bytes in and out


def test_concurrent_calls_on_one_connection_each_get_their_own_reply(
    served: tuple[H2Server, Handler, grpc.Channel],
) -> None:
    _, _, channel = served
    echo = _call(channel, "/t/Echo")
    calls = [
        echo.future(f"message {i}".encode(), metadata=(("x-request-id", f"id-{i}"),))
        for i in range(200)
    ]
    for i, call in enumerate(calls):
        assert call.result(timeout=30) == f"message {i}".encode()[::-1]
        # the metadata changes per call: a cached header block must not answer for another
        assert ("x-request-id", f"id-{i}") in call.trailing_metadata()


def _a_held_call_does_not_hold_the_next(handler: Handler, channel: grpc.Channel) -> None:
    held = _call(channel, "/t/Hold").future(b"", timeout=30)
    wait_for(lambda: handler.holding == 1, 30, "the held call to reach the handler")
    assert _call(channel, "/t/Echo")(b"beside", timeout=10) == b"ediseb"
    assert not held.done()
    handler.hold.set()
    assert held.result(timeout=30) == b"held"


def test_a_connection_answers_one_call_at_a_time_itself_until_its_client_sends_more(
    served: tuple[H2Server, Handler, grpc.Channel],
) -> None:
    server, handler, channel = served
    echo = _call(channel, "/t/Echo")
    for i in range(10):  # one quick call at a time: the connection's reader answers each
        assert echo(b"%d" % i, timeout=30) == b"%d" % i
    wait_for(lambda: echo(b"", timeout=30) == b"" and server.pace.quick, 30, "quick calls")
    (conn,) = server._connections
    assert conn.sequential
    # calls sent while one runs wait for it (the reader is busy answering it), then run
    first = _call(channel, "/t/Wait").future(b"", timeout=30)
    wait_for(lambda: handler.waiting == 1, 30, "the first call to reach the handler")
    more = [echo.future(b"more %d" % i, timeout=30) for i in range(2)]
    handler.release.set()
    assert first.result(timeout=30) == b"done"
    assert [m.result(timeout=30) for m in more] == [b"0 erom", b"1 erom"]
    wait_for(lambda: not conn.sequential, 30, "the connection to see calls at once")
    # from then on every call is spawned: one that is held does not hold the next
    _a_held_call_does_not_hold_the_next(handler, channel)


def test_while_calls_are_slow_each_is_spawned_and_none_waits_behind_another(
    served: tuple[H2Server, Handler, grpc.Channel],
) -> None:
    server, handler, channel = served
    slow = _call(channel, "/t/Slow")
    for _ in range(5):
        assert slow(b"", timeout=30) == b"slow"
    assert not server.pace.quick
    (conn,) = server._connections
    assert conn.sequential  # one call at a time, but slow ones: not answered by the reader
    _a_held_call_does_not_hold_the_next(handler, channel)


def test_a_reply_larger_than_the_client_window_arrives_whole(
    served: tuple[H2Server, Handler, grpc.Channel],
) -> None:
    _, _, channel = served
    size = 3 * 1024 * 1024  # the client's window starts at 64 KiB: WINDOW_UPDATEs pace it
    reply = _call(channel, "/t/Big")(str(size).encode(), timeout=30)
    assert len(reply) == size and reply == bytes(range(256)) * (size // 256)


def test_a_request_of_many_frames_is_read_and_one_over_the_limit_is_refused(
    served: tuple[H2Server, Handler, grpc.Channel],
) -> None:
    _, _, channel = served
    echo = _call(channel, "/t/Echo")
    big = bytes(range(256)) * (LIMIT // 256)  # at the limit: many DATA frames
    assert echo(big, timeout=30) == big[::-1]
    with pytest.raises(grpc.RpcError) as caught:
        echo(big + b"x", timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over the limit of 1048576 bytes" in (caught.value.details() or "")
    assert echo(b"still serving", timeout=30) == b"gnivres llits"


def test_status_and_message_reach_the_client_as_sent(
    served: tuple[H2Server, Handler, grpc.Channel],
) -> None:
    _, _, channel = served
    with pytest.raises(grpc.RpcError) as caught:
        _call(channel, "/t/Fail")(b"", metadata=(("x-request-id", "r1"),), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "ungültig: 100% wrong\nsecond line"
    assert ("x-request-id", "r1") in caught.value.trailing_metadata()
    with pytest.raises(grpc.RpcError) as unknown:
        _call(channel, "/t/Nope")(b"", timeout=30)
    assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_stop_finishes_the_calls_in_flight_then_refuses(
    served: tuple[H2Server, Handler, grpc.Channel],
) -> None:
    server, handler, channel = served
    pending = _call(channel, "/t/Wait").future(b"", timeout=30)
    wait_for(lambda: handler.waiting == 1, 30, "the call to reach the handler")
    stopper = threading.Thread(target=server.stop, args=(30.0,))
    stopper.start()
    wait_for(lambda: server._stopping, 30, "the server to start stopping")
    handler.release.set()
    assert pending.result(timeout=30) == b"done"
    stopper.join(30)
    assert not stopper.is_alive()
    with pytest.raises(grpc.RpcError) as refused:
        _call(channel, "/t/Echo")(b"late", timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.unit
def test_cached_header_blocks_decode_as_hpack_does_while_the_table_churns() -> None:
    import hpack

    from runtime.server.grpc.h2c import _HeaderDecoder

    encoder, reference, ours = hpack.Encoder(), hpack.Decoder(), _HeaderDecoder()
    # 40 values of ~120 bytes cycle through a 4 KiB table, each sent twice: inserted
    # (a literal, the very same bytes each cycle: evicted in between) then indexed (the
    # same two bytes for every value: what they mean depends on the table)
    for i in range(400):
        headers = [(":method", "POST"), ("x-key", f"{(i // 2) % 40:03d}" + "v" * 120)]
        block = encoder.encode(headers)
        want = {k.decode(): v.decode() for k, v in reference.decode(block, raw=True)}
        assert ours.decode(block) == want, i


def test_a_client_that_does_not_speak_http2_is_closed_and_others_are_served(
    served: tuple[H2Server, Handler, grpc.Channel],
) -> None:
    import socket

    server, _, channel = served
    assert server.port is not None
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while chunk := sock.recv(4096):  # the server closes: recv returns b""
            received += chunk
    # its SETTINGS, then GOAWAY (frame type 7) with PROTOCOL_ERROR (1)
    assert b"\x07\x00\x00\x00\x00\x00" in received and received.endswith(b"\x00\x00\x00\x01")
    assert _call(channel, "/t/Echo")(b"ok", timeout=30) == b"ko"


def test_one_frame_larger_than_a_read_arrives_whole_in_small_pieces(
    served: tuple[H2Server, Handler, grpc.Channel],
) -> None:
    """A DATA frame of 900 KB spans many reads (64 KiB each); sent in pieces of 50 KB
    after half a preface, it is gathered and answered like one sent at once."""
    import random
    import socket
    import struct

    import hpack

    from runtime.server.grpc.h2c import PREFACE, encode_message

    server, _, _ = served
    assert server.port is not None
    message = random.Random(7).randbytes(900_000)
    block = hpack.Encoder().encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/t/Echo"),
            (":authority", "x"),
            ("content-type", "application/grpc"),
        ]
    )

    def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
        n = len(payload)
        return struct.pack(">HBBBI", n >> 8, n & 0xFF, kind, flags, sid) + payload

    window = (1 << 31) - 1
    wire = (
        PREFACE
        + frame(4, 0, 0, struct.pack(">HI", 4, window))  # SETTINGS: a large stream window
        + frame(8, 0, 0, struct.pack(">I", window - 65535))  # and connection window
        + frame(1, 4, 1, block)
        + frame(0, 1, 1, encode_message(message))
    )
    reply, buf, done = b"", b"", False
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(wire[:10])
        for i in range(10, len(wire), 50_000):
            sock.sendall(wire[i : i + 50_000])
        while not done:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection before the trailers"
            buf += chunk
            while len(buf) >= 9:
                hi, lo, kind, flags, sid = struct.unpack_from(">HBBBI", buf)
                n = (hi << 8) | lo
                if len(buf) < 9 + n:
                    break
                payload, buf = buf[9 : 9 + n], buf[9 + n :]
                if kind == 0 and sid == 1:
                    reply += payload
                done = done or (kind == 1 and sid == 1 and bool(flags & 1))
    assert reply == encode_message(message[::-1])
