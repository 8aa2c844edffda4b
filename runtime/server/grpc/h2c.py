"""Unary gRPC calls over HTTP/2 cleartext (h2c): a small server loop, no gRPC library.

grpcio's server costs 2.4-3.5 ms of CPU per call inside a gevent worker (every
completion-queue event is a hand-off to a native thread and back); this loop runs on
the worker's own event loop like the HTTP/1.1 one (:mod:`runtime.server.worker`), so a
call is a greenlet beside the HTTP requests, through the same batcher and limiter.

What it speaks: the connection preface, SETTINGS, PING, WINDOW_UPDATE, GOAWAY,
RST_STREAM, HEADERS/CONTINUATION (HPACK decoded by ``hpack``), DATA, with flow control
both ways (a reply larger than the client's window waits for its WINDOW_UPDATEs). Each
stream is one unary call: the request headers, one length-prefixed message, then
``handler(path, metadata, message)`` answers with a :class:`Reply` (a status code, its
message, the reply bytes, trailing metadata). Not supported, and answered as such:
compressed messages (``UNIMPLEMENTED``), streaming calls (a second message:
``UNIMPLEMENTED``), TLS (serve it behind a proxy, as Knative does), ``grpc-timeout``
(the client enforces its own deadline).

Concurrency: each call runs in ``spawn(fn)`` (a greenlet under gevent, a thread
otherwise); one lock per connection orders the writes and the flow-control state. A
connection whose client has sent one call at a time so far has its call answered by the
connection's own reader, as the HTTP/1.1 loop answers a request: no greenlet to start
and no turn of the event loop before the reply. Before that reply leaves, the reader
takes what the client has sent meanwhile: if it holds a new call (the client did not
wait for the reply: it sends calls at once), or two calls come in one read, the
connection spawns every call from then on, so that such calls run at once (and batch
together). At most the calls sent during that one answered call waited for it, and
only while calls are quick (:class:`Pace`: a slow model's calls are always spawned, so
that none waits behind one).
:meth:`H2Server.stop` sends GOAWAY, lets the calls in flight finish within the drain
period, then closes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

import hpack
from hpack.table import HeaderTable

from runtime.server.sockets import sender

__all__ = ["H2Server", "Handler", "Pace", "Reply", "encode_message"]

log = logging.getLogger("mlfn.server")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE = range(9)
CONTINUATION = 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR = 0x0, 0x1, 0x3, 0x6
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x7, 0x8, 0x9

MAX_FRAME_IN = 1 << 20
"""The largest frame this server accepts (advertised in SETTINGS_MAX_FRAME_SIZE)."""
WINDOW = 1 << 22
"""The receive window of every stream and of the connection (topped up at half)."""
MAX_STREAMS = 1000
"""Calls one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS)."""
MAX_HEADER_BLOCK = 1 << 16
"""The largest header block (HEADERS and its CONTINUATIONs) a client may send."""
READ_SIZE = 65536
"""Bytes asked of each ``recv`` (a frame larger than that arrives over several)."""
MAX_MESSAGE_TEXT = 2000
"""Longest ``grpc-message`` sent (clients cap metadata at a few KiB)."""

_FRAME = struct.Struct(">HBBBI")  # length (24 bits as 16 + 8), type, flags, stream id
_U32 = struct.Struct(">I")
_PAIR = struct.Struct(">HI")
_PREFIX = struct.Struct(">BI")  # gRPC message: compressed flag, length
_INITIAL_PEER_WINDOW = 65535
_MAX_WINDOW = (1 << 31) - 1
_CACHED_BLOCKS = 64


class _CountingTable(HeaderTable):
    """HPACK's dynamic table, counting its insertions (which invalidate cached blocks)."""

    changes = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.changes += 1
        super().add(name, value)


class _HeaderDecoder:
    """HPACK decoding, with the blocks a client repeats served from a cache.

    A client's header blocks repeat byte for byte once its dynamic table holds its
    headers (gRPC clients send the same few on every call), and decoding one in pure
    Python costs more than the rest of a call's framing. A block that did not change the
    table decodes to the same headers while the table stays as it is, so it is cached
    until any block inserts into the table or resizes it; blocks that insert are always
    decoded (their insertions must happen each time).
    """

    def __init__(self) -> None:
        self._decoder = hpack.Decoder()
        self._table = _CountingTable()
        self._decoder.header_table = self._table
        self._cache: dict[bytes, dict[str, str]] = {}
        self._state = (0, self._table.maxsize)

    def decode(self, block: bytes) -> dict[str, str]:
        """The headers of ``block`` (names lower-case, as HTTP/2 sends them); read-only.

        Raises:
            hpack.HPACKError: the block does not decode (the connection must close).
        """
        state = (self._table.changes, self._table.maxsize)
        if state != self._state:
            self._cache.clear()
            self._state = state
        hit = self._cache.get(block)
        if hit is not None:
            return hit
        fields = self._decoder.decode(block, raw=True)
        headers: dict[str, str] = {}
        for k, v in fields:
            name, value = k.decode("latin-1"), v.decode("latin-1")
            old = headers.get(name)
            headers[name] = value if old is None else f"{old}, {value}"
        if (self._table.changes, self._table.maxsize) == state:
            if len(self._cache) >= _CACHED_BLOCKS:
                self._cache.clear()
            self._cache[block] = headers
        return headers


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _FRAME.pack(n >> 8, n & 0xFF, kind, flags, stream) + payload


def _hpack_int(value: int, bits: int, first: int = 0) -> bytes:
    limit = (1 << bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """An HPACK literal field without indexing (no state in the client's table)."""
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


_OK_TRAILER = _literal(b"grpc-status", b"0")
"""The trailer of every call that succeeds."""
_BYTE = [bytes([n]) for n in range(127)]


@functools.lru_cache(maxsize=64)
def _literal_name(name: str) -> bytes:
    """The start of :func:`_literal` for ``name``: the same few names on every call."""
    raw = name.encode("latin-1")
    return b"\x00" + _hpack_int(len(raw), 7) + raw


def _literal_value(value: bytes) -> bytes:
    """The rest of :func:`_literal`: the value's length, then the value."""
    n = len(value)
    return (_BYTE[n] if n < 127 else _hpack_int(n, 7)) + value


# :status 200 (static index 8), content-type (static name 31): application/grpc
_REPLY_HEAD = b"\x88" + _hpack_int(31, 4) + _hpack_int(16, 7) + b"application/grpc"


def _status_head(status: int) -> bytes:
    # :status is static name index 8 (a literal value for anything but 200)
    return _hpack_int(8, 4) + _hpack_int(len(str(status)), 7) + str(status).encode()


def _percent(text: str) -> bytes:
    """``grpc-message`` encoding: UTF-8, bytes outside printable ASCII (and ``%``) as %XX."""
    raw = text.encode("utf-8", "replace")[:MAX_MESSAGE_TEXT]
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw
    return b"".join(bytes([b]) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in raw)


def encode_message(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return _PREFIX.pack(0, len(message)) + message


@dataclass(frozen=True)
class Reply:
    """A call's answer: status ``code`` (0: OK) and ``message``; ``body`` when OK."""

    code: int
    message: str = ""
    body: bytes | None = None
    trailers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[str, Mapping[str, str], bytes], Reply]
"""``handler(path, metadata, message)``: one unary call (metadata names are lower-case)."""


@dataclass(eq=False)
class _Stream:
    sid: int
    headers: dict[str, str]
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    unacked: int = 0
    send_window: int = _INITIAL_PEER_WINDOW
    pending: memoryview | None = None  # reply bytes the client's window does not take yet
    trailer: bytes = b""
    rejected: bool = False  # answered already (oversized): later DATA is dropped
    closed: bool = False


class _ConnectionError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


INLINE_MAX_S = 0.002
"""Calls are answered by a connection's reader only while they take less than this on
average (see the module docstring): the most a call sent beside one may wait for it."""


class Pace:
    """How long the calls of a server take, on average (recent calls count most)."""

    def __init__(self) -> None:
        self.mean_s = 2 * INLINE_MAX_S  # unknown: slow, until calls show otherwise

    def record(self, seconds: float) -> None:
        self.mean_s += 0.2 * (seconds - self.mean_s)

    @property
    def quick(self) -> bool:
        return self.mean_s < INLINE_MAX_S


class _Connection:
    """One client connection: frames in, calls spawned, replies out."""

    def __init__(
        self,
        sock: socket.socket,
        handler: Handler,
        spawn: Callable[[Callable[[], None]], object],
        max_message: int,
        defer: Callable[[Callable[[], None]], object] | None = None,
        pace: Pace | None = None,
    ) -> None:
        self.sock = sock
        self.pace = pace or Pace()
        self.send = sender(sock)
        self._peek = _peeker(sock)
        self.handler = handler
        self.spawn = spawn
        self.defer = defer
        self.max_message = max_message
        self.decoder = _HeaderDecoder()
        self.lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.last_sid = 0
        self.send_window = _INITIAL_PEER_WINDOW
        self.peer_initial_window = _INITIAL_PEER_WINDOW
        self.peer_max_frame = 16384
        self.unacked = 0
        self.blocked: dict[int, _Stream] = {}  # streams waiting for window, in order
        self.continuing: tuple[int, int, list[bytes]] | None = None
        self.draining = False
        self.active = 0  # calls started and not yet answered
        self.ready: list[tuple[_Stream, bytes]] = []  # calls complete in this read
        # one call at a time so far: the reader answers it (see the module's docstring)
        self.sequential = _NO_WAIT is not None
        self.out: list[bytes] = []  # control frames of one read, sent together
        self.replies: list[bytes] = []  # replies waiting for the deferred flush

    # --- writing ---------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Under the lock: send ``data`` after any replies still waiting (frame order)."""
        if self.replies:
            self.replies.append(data)
            data, self.replies = b"".join(self.replies), []
        if data:
            with contextlib.suppress(OSError):  # the client left; the reader sees it too
                self.send(data)

    def _flush_replies(self) -> None:
        with self.lock:
            self._write(b"")

    def _send_reply(self, data: bytes) -> None:
        """Under the lock: send now, or with the other replies of this loop turn.

        Under gevent the replies of one batch are ready together: one send for all of
        them (``defer`` runs the flush once the woken calls have run). A connection with
        no other call in flight has nothing to wait for: its reply leaves now, without
        another turn of the event loop.
        """
        if self.defer is None or (self.active <= 1 and not self.replies):
            self._write(data)
            return
        if not self.replies:
            self.defer(self._flush_replies)
        self.replies.append(data)

    def _flush_control(self) -> None:
        if self.out:
            data, self.out = b"".join(self.out), []
            with self.lock:
                self._write(data)

    def _pump(self, stream: _Stream, out: list[bytes]) -> None:
        """Under the lock: the DATA frames the windows allow, then the trailers."""
        data = stream.pending
        if data is not None:
            while data:
                n = min(len(data), self.send_window, stream.send_window, self.peer_max_frame)
                if n <= 0:
                    stream.pending = data
                    self.blocked[stream.sid] = stream
                    return
                out.append(_frame(DATA, 0, stream.sid, bytes(data[:n])))
                data = data[n:]
                self.send_window -= n
                stream.send_window -= n
            stream.pending = None
        self.blocked.pop(stream.sid, None)
        out.append(_frame(HEADERS, END_HEADERS | END_STREAM, stream.sid, stream.trailer))
        stream.closed = True
        self.streams.pop(stream.sid, None)

    def respond(self, stream: _Stream, reply: Reply) -> None:
        code = reply.code
        trailer = [_OK_TRAILER if code == 0 else _literal(b"grpc-status", b"%d" % code)]
        if reply.message:
            trailer.append(_literal(b"grpc-message", _percent(reply.message)))
        for k, v in reply.trailers:
            trailer.append(_literal_name(k) + _literal_value(v.encode("latin-1", "replace")))
        block = b"".join(trailer)
        out: list[bytes] = []
        with self.lock:
            if stream.closed:
                return
            body = reply.body
            if (
                reply.code == 0
                and body is not None
                and len(body) + 5 <= min(self.send_window, stream.send_window, self.peer_max_frame)
            ):  # the common reply: HEADERS, one DATA frame, trailers, written at once
                n, sid = len(body) + 5, stream.sid
                self.send_window -= n
                stream.send_window -= n
                stream.closed = True
                self.streams.pop(sid, None)
                self.blocked.pop(sid, None)
                m = len(block)
                self._send_reply(
                    b"".join(
                        (
                            _FRAME.pack(0, len(_REPLY_HEAD), HEADERS, END_HEADERS, sid),
                            _REPLY_HEAD,
                            _FRAME.pack(n >> 8, n & 0xFF, DATA, 0, sid),
                            _PREFIX.pack(0, n - 5),
                            body,
                            _FRAME.pack(m >> 8, m & 0xFF, HEADERS, END_HEADERS | END_STREAM, sid),
                            block,
                        )
                    )
                )
                return
            if reply.code == 0 and reply.body is not None:
                out.append(_frame(HEADERS, END_HEADERS, stream.sid, _REPLY_HEAD))
                stream.pending = memoryview(encode_message(reply.body))
                stream.trailer = block
            else:  # trailers-only: one HEADERS frame
                stream.trailer = _REPLY_HEAD + block
            self._pump(stream, out)
            self._send_reply(b"".join(out))

    def refuse(self, stream: _Stream, status: int) -> None:
        """An HTTP-level refusal (not a gRPC call): ``:status`` and nothing else."""
        with self.lock:
            if stream.closed:
                return
            stream.closed = True
            self.streams.pop(stream.sid, None)
            self._write(_frame(HEADERS, END_HEADERS | END_STREAM, stream.sid, _status_head(status)))

    # --- reading ---------------------------------------------------------------------

    def serve(self) -> None:
        settings = b"".join(
            _PAIR.pack(k, v) for k, v in ((3, MAX_STREAMS), (4, WINDOW), (5, MAX_FRAME_IN), (2, 0))
        )
        with self.lock:
            self._write(_frame(SETTINGS, 0, 0, settings))
            self._write(_frame(WINDOW_UPDATE, 0, 0, _U32.pack(WINDOW - 65535)))
        buf = b""  # bytes not parsed yet: the start of a frame (or of the preface)
        held: list[bytes] = []  # what arrived since, until the frame is complete
        have = 0  # len(buf) + the bytes held
        need = len(PREFACE)  # what buf must hold before parsing goes on
        preface = True
        recv = self.sock.recv
        early: bytes | None = None  # what came while the reader answered a call
        try:
            while True:
                # 64 KiB: a larger size costs an mmap and munmap per call (malloc's
                # threshold), for every small call; large frames gather in ``held``
                data = recv(READ_SIZE) if early is None else early
                # a new call in what came before the reply left: the client sends calls
                # at once (a PING or a WINDOW_UPDATE is no call)
                watch = None if early is None else self.last_sid
                early = None
                if not data:
                    return
                have += len(data)
                if buf:
                    held.append(data)
                    if have < need and not preface:
                        continue  # joined once, when the frame is whole: linear in its size
                    buf = b"".join([buf, *held])
                    held = []
                else:
                    buf = data
                if preface:
                    if have < len(PREFACE):
                        if not PREFACE.startswith(buf):
                            raise _ConnectionError(PROTOCOL_ERROR, "not an HTTP/2 connection")
                        continue
                    if not buf.startswith(PREFACE):
                        raise _ConnectionError(PROTOCOL_ERROR, "not an HTTP/2 connection")
                    buf, preface = buf[len(PREFACE) :], False
                pos, end = 0, len(buf)
                need = 9
                while end - pos >= 9:
                    hi, lo, kind, flags, sid = _FRAME.unpack_from(buf, pos)
                    n = (hi << 8) | lo
                    if n > MAX_FRAME_IN:
                        raise _ConnectionError(FRAME_SIZE_ERROR, f"a frame of {n} bytes")
                    if end - pos - 9 < n:
                        need = 9 + n
                        break
                    self._frame_in(kind, flags, sid & 0x7FFFFFFF, buf[pos + 9 : pos + 9 + n])
                    pos += 9 + n
                buf = buf[pos:] if pos else buf
                have = len(buf)
                self._flush_control()
                if watch is not None and self.last_sid > watch:
                    self.sequential = False
                if self.ready:
                    early = self._start_ready()
        except _ConnectionError as err:
            log.info("gRPC connection closed: %s", err)
            self._flush_control()
            self._start_ready(inline=False)  # the calls complete before the error run
            with self.lock:
                self._write(_frame(GOAWAY, 0, 0, _U32.pack(self.last_sid) + _U32.pack(err.code)))
        except OSError:
            return
        finally:
            self.active -= len(self.ready)  # (the socket failed: nobody to answer)
            self.ready = []
            with self.lock:
                for stream in self.streams.values():
                    stream.closed = True
                self.streams.clear()
                self.blocked.clear()

    def _frame_in(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self.continuing is not None and kind != CONTINUATION:
            raise _ConnectionError(PROTOCOL_ERROR, "a header block was interrupted")
        if kind == DATA:
            self._data(flags, sid, payload)
        elif kind == HEADERS:
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            if flags & END_HEADERS:
                self._headers(sid, flags, payload)
            else:
                self.continuing = (sid, flags, [payload])
        elif kind == CONTINUATION:
            if self.continuing is None or self.continuing[0] != sid:
                raise _ConnectionError(PROTOCOL_ERROR, "CONTINUATION out of place")
            self.continuing[2].append(payload)
            if sum(len(p) for p in self.continuing[2]) > MAX_HEADER_BLOCK:
                raise _ConnectionError(
                    PROTOCOL_ERROR, f"a header block over {MAX_HEADER_BLOCK} bytes"
                )
            if flags & END_HEADERS:
                first, parts = self.continuing[1], self.continuing[2]
                self.continuing = None
                self._headers(sid, first, b"".join(parts))
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(sid, payload)
        elif kind == PING:
            if not flags & ACK:
                self.out.append(_frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            with self.lock:
                stream = self.streams.pop(sid, None)
                if stream is not None:
                    stream.closed = True
                    self.blocked.pop(sid, None)
        elif kind == GOAWAY:
            self.draining = True
        elif kind == PUSH_PROMISE:
            raise _ConnectionError(PROTOCOL_ERROR, "a client may not push")
        # PRIORITY and unknown frame types: ignored, as HTTP/2 requires

    def _settings(self, payload: bytes) -> None:
        with self.lock:
            for i in range(0, len(payload) - 5, 6):
                key, value = _PAIR.unpack_from(payload, i)
                if key == 4:
                    if value > _MAX_WINDOW:
                        raise _ConnectionError(FLOW_CONTROL_ERROR, "initial window too large")
                    delta = value - self.peer_initial_window
                    self.peer_initial_window = value
                    for stream in self.streams.values():
                        stream.send_window += delta
                elif key == 5:
                    self.peer_max_frame = value
            # at once, before any reply: a client holds us to its new values (a larger
            # frame size, say) only once it has this acknowledgement
            self._write(_frame(SETTINGS, ACK, 0))
            if self.blocked:
                self._unblock()

    def _window_update(self, sid: int, payload: bytes) -> None:
        increment = _U32.unpack(payload[:4])[0] & 0x7FFFFFFF
        with self.lock:
            if sid == 0:
                self.send_window += increment
            else:
                stream = self.streams.get(sid)
                if stream is None:
                    return
                stream.send_window += increment
            if self.blocked:
                self._unblock()

    def _unblock(self) -> None:
        """Under the lock: send what the grown windows allow."""
        out: list[bytes] = []
        for stream in list(self.blocked.values()):
            self._pump(stream, out)
            if self.send_window <= 0:
                break
        if out:
            self._write(b"".join(out))

    def _headers(self, sid: int, flags: int, block: bytes) -> None:
        try:
            headers = self.decoder.decode(block)
        except hpack.HPACKError as err:
            raise _ConnectionError(COMPRESSION_ERROR, f"header block: {err}") from None
        stream = self.streams.get(sid)
        if stream is not None:  # trailers from the client end its half of the call
            if not flags & END_STREAM:
                raise _ConnectionError(PROTOCOL_ERROR, "a second header block mid-stream")
            self._complete(stream)
            return
        if sid % 2 == 0 or sid <= self.last_sid:
            raise _ConnectionError(PROTOCOL_ERROR, f"stream id {sid} out of order")
        self.last_sid = sid
        if self.draining or len(self.streams) >= MAX_STREAMS:
            self.out.append(_frame(RST_STREAM, 0, sid, _U32.pack(REFUSED_STREAM)))
            return
        stream = _Stream(sid, headers, send_window=self.peer_initial_window)
        self.streams[sid] = stream
        if flags & END_STREAM:
            self._complete(stream)

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        counted = len(payload)
        if flags & PADDED and payload:
            payload = payload[1 : len(payload) - payload[0]]
        self.unacked += counted
        if self.unacked >= WINDOW // 2:
            self.out.append(_frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.unacked)))
            self.unacked = 0
        stream = self.streams.get(sid)
        if stream is None or stream.rejected:
            return  # reset, answered, or unknown: flow control counted, data dropped
        stream.size += len(payload)
        if stream.size > self.max_message + 5:
            stream.rejected = True
            stream.chunks = []
            self.respond(
                stream,
                Reply(
                    8,  # RESOURCE_EXHAUSTED
                    f"the request message is over the limit of {self.max_message} bytes; "
                    "send smaller requests or raise MLFN_MAX_BODY_BYTES",
                ),
            )
            self.out.append(_frame(RST_STREAM, 0, sid, _U32.pack(NO_ERROR)))
            return
        stream.chunks.append(payload)
        if flags & END_STREAM:
            self._complete(stream)
            return
        stream.unacked += counted
        if stream.unacked >= WINDOW // 2:
            self.out.append(_frame(WINDOW_UPDATE, 0, sid, _U32.pack(stream.unacked)))
            stream.unacked = 0

    def _complete(self, stream: _Stream) -> None:
        """The client's half of the call is complete: run it."""
        if stream.rejected:
            return
        headers = stream.headers
        if headers.get(":method") != "POST":
            self.refuse(stream, 405)
            return
        if not headers.get("content-type", "").startswith("application/grpc"):
            self.refuse(stream, 415)
            return
        body = stream.chunks[0] if len(stream.chunks) == 1 else b"".join(stream.chunks)
        stream.chunks = []
        self.active += 1
        self.ready.append((stream, body))

    def _start_ready(self, *, inline: bool = True) -> bytes | None:
        """Run the calls completed by the last read: the reader answers a lone call of a
        client that sends one at a time (and returns what the client sent meanwhile, if
        anything); else each is spawned."""
        ready, self.ready = self.ready, []
        if inline and self.sequential and len(ready) == 1 and self.active == 1 and self.pace.quick:
            return self._run_call(*ready[0], inline=True)
        if len(ready) > 1 or self.active > len(ready):
            self.sequential = False  # calls at once: never inline again
        for stream, body in ready:
            self.spawn(partial(self._call, stream, body))
        return None

    def _call(self, stream: _Stream, body: bytes) -> None:
        self._run_call(stream, body, inline=False)

    def _run_call(self, stream: _Stream, body: bytes, *, inline: bool) -> bytes | None:
        """Answer one call; ``inline`` (on the reader): first take, without waiting,
        what the client has sent since (None: nothing).

        The take comes before the reply's ``send``, not after: the reply wakes the
        client, which may run (on the same CPU, at once) and send its next call before
        the take, and every client that waits for its replies would look like one that
        sends calls at once (tried: a stub's c=1 round trip went from 36 to 75 us)."""
        early = None
        started = time.perf_counter()
        try:
            reply = self._answer(stream.headers, body)
            self.pace.record(time.perf_counter() - started)
            if inline:
                early = self._peek()
            self.respond(stream, reply)
        except Exception:  # the handler maps its own errors; this is a bug here
            log.exception("gRPC call %s failed in the transport", stream.headers.get(":path"))
            self.respond(stream, Reply(13, "internal error in the gRPC transport"))
        finally:
            self.active -= 1
        return early

    def _answer(self, headers: Mapping[str, str], body: bytes) -> Reply:
        if len(body) < 5:
            return Reply(13, "the request has no message; a unary call sends exactly one")
        compressed, length = _PREFIX.unpack_from(body)
        if length != len(body) - 5:
            return Reply(12, "streaming calls are not supported; send exactly one message")
        if compressed:
            return Reply(
                12,
                f"compressed messages ({headers.get('grpc-encoding', '?')}) are not "
                "supported; send them uncompressed",
            )
        return self.handler(headers.get(":path", ""), headers, body[5:])

    def go_away(self) -> None:
        """Stop taking new calls on this connection (those in flight finish)."""
        self.draining = True
        with self.lock:
            self._write(_frame(GOAWAY, 0, 0, _U32.pack(self.last_sid) + _U32.pack(NO_ERROR)))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


_NO_WAIT: int | None = getattr(socket, "MSG_DONTWAIT", None)


def _peeker(sock: socket.socket) -> Callable[[], bytes | None]:
    """A read that does not wait: what the client has sent already, or None (b"": the
    connection ended or failed).

    Under gevent it reads the OS socket (gevent's ``recv`` would wait for more).
    """
    raw = getattr(sock, "_sock", sock)
    flags = _NO_WAIT or 0

    def peek() -> bytes | None:
        try:
            return bytes(raw.recv(READ_SIZE, flags))
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""  # the reader stops at an empty read

    return peek


def _spawn_thread(fn: Callable[[], None]) -> object:
    t = threading.Thread(target=fn, daemon=True, name="mlfn-grpc-call")
    t.start()
    return t


class H2Server:
    """Accepts gRPC connections on ``host:port`` (0: a free port) and answers their calls.

    Args:
        handler: answers each call (see :data:`Handler`).
        max_message: the largest request message (bytes); larger: ``RESOURCE_EXHAUSTED``.
        spawn: runs a call or a connection concurrently (default: a thread each).
        defer: runs a function once the calls woken now have run (gevent's
            ``loop.run_callback``), so their replies leave in one send; None: at once.
        reuse_port: bind with ``SO_REUSEPORT``, so several worker processes share a port.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        max_message: int,
        spawn: Callable[[Callable[[], None]], object] = _spawn_thread,
        defer: Callable[[Callable[[], None]], object] | None = None,
        reuse_port: bool = True,
    ) -> None:
        self.handler = handler
        self.max_message = max_message
        self.spawn = spawn
        self.defer = defer
        self.reuse_port = reuse_port
        self.port: int | None = None
        self._listener: socket.socket | None = None
        self._connections: set[_Connection] = set()
        self._stopping = False
        self.pace = Pace()

    def bind(self, host: str, port: int) -> int:
        """Listen on ``host:port``; the port bound. Raises OSError when it is taken."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
        self._listener = sock
        self.port = int(sock.getsockname()[1])
        return self.port

    def start(self) -> None:
        """Accept connections in the background (after :meth:`bind`)."""
        assert self._listener is not None, "bind() first"
        self.spawn(self._accept)

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._stopping:
                client.close()
                return
            with contextlib.suppress(OSError):
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(
                client, self.handler, self.spawn, self.max_message, self.defer, self.pace
            )
            self._connections.add(conn)
            self.spawn(lambda c=conn: self._serve(c))  # type: ignore[misc]

    def _serve(self, conn: _Connection) -> None:
        try:
            conn.serve()
        finally:
            self._connections.discard(conn)
            conn.close()

    def in_flight(self) -> int:
        """Calls running now, over all connections."""
        return sum(c.active for c in list(self._connections))

    def stop(self, drain_s: float, sleep: Callable[[float], object] = time.sleep) -> None:
        """Stop accepting; GOAWAY to every client; wait for calls in flight (at most
        ``drain_s``); close."""
        self._stopping = True
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes an accept() waiting in a thread
                self._listener.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self._listener.close()
        for conn in list(self._connections):
            conn.go_away()
        deadline = time.monotonic() + drain_s
        while self.in_flight() and time.monotonic() < deadline:
            sleep(0.02)
        for conn in list(self._connections):
            conn.close()
