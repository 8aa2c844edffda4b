"""A small, fast HTTP/1.1 reverse proxy core on asyncio protocols and httptools.

The gateway's hot path: parse a request from the client (httptools), write it to an
instance over a pooled keep-alive connection, and pass the response bytes back as they
arrive while a response parser only watches for the end of the message. No WSGI, no
per-request objects beyond one :class:`Request`.

Limits (fine for a local platform): request bodies are read whole before forwarding;
no HTTP upgrades (WebSocket); response flow control is left to the kernel buffers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httptools

__all__ = [
    "DownstreamProtocol",
    "Request",
    "UpstreamError",
    "UpstreamPool",
    "error_response",
    "json_response",
]

log = logging.getLogger(__name__)

_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"upgrade",
        b"content-length",
        b"expect",
    }
)
_REASONS = {
    200: "OK",
    400: "Bad Request",
    413: "Content Too Large",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Request:
    """One parsed client request."""

    __slots__ = ("body", "headers", "host", "keep_alive", "method", "path")

    def __init__(
        self,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        host: bytes | None,
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.host = host
        self.keep_alive = keep_alive

    def encode(self, path: bytes) -> bytes:
        """The request as sent upstream: HTTP/1.1, keep-alive, de-chunked body."""
        parts = [self.method, b" ", path, b" HTTP/1.1\r\n"]
        for name, value in self.headers:
            if name.lower() not in _HOP:
                parts += [name, b": ", value, b"\r\n"]
        if self.body or self.method in (b"POST", b"PUT", b"PATCH"):
            parts += [b"Content-Length: ", str(len(self.body)).encode(), b"\r\n"]
        parts += [b"\r\n", self.body]
        return b"".join(parts)


def json_response(status: int, payload: Any, *, close: bool = False) -> bytes:
    """A complete HTTP/1.1 response with a JSON body."""
    body = json.dumps(payload, default=str).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    )
    if status == 503:
        head += "Retry-After: 1\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


def error_response(status: int, message: str, **extra: Any) -> bytes:
    """A short JSON error, never a traceback: ``{"error": ..., "status": ...}``."""
    return json_response(status, {"error": message, "status": status, **extra})


Handler = Callable[[Request, "DownstreamProtocol"], Awaitable[None]]


class DownstreamProtocol(asyncio.Protocol):
    """One client connection. Requests are handled in order (pipelining-safe)."""

    def __init__(
        self,
        handler: Handler,
        connections: set[DownstreamProtocol],
        max_body: int = 10 * 1024 * 1024,
    ) -> None:
        self._handler = handler
        self._connections = connections
        self._max_body = max_body
        self._body_size = 0
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._host: bytes | None = None
        self._queue: deque[Request] = deque()
        self._busy = False
        self.closing = False
        self.upstream: asyncio.Transport | None = None  # paused while the client is slow
        self.upstream_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.send(error_response(501, "HTTP upgrades (WebSocket) are not supported"), False)
        except httptools.HttpParserCallbackError:
            pass  # the callback already answered and closed
        except httptools.HttpParserError as err:
            self.send(error_response(400, f"malformed HTTP request: {err}"), False)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []
        self._body_size = 0
        self._host = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        low = name.lower()
        if low == b"host":
            self._host = value
        elif low == b"expect" and value.lower() == b"100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._max_body:
            self.send(
                error_response(
                    413,
                    f"request body over {self._max_body} bytes (MLFN_MAX_BODY_BYTES)",
                ),
                False,
            )
            raise httptools.HttpParserCallbackError("body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        request = Request(
            self._parser.get_method(),
            self._url,
            self._headers,
            b"".join(self._body),
            self._host,
            self._parser.should_keep_alive(),
        )
        if self._busy:
            self._queue.append(request)
        else:
            self._start(request)

    def _start(self, request: Request) -> None:
        self._busy = True
        task = asyncio.ensure_future(self._handler(request, self))
        task.add_done_callback(self._handled)

    def _handled(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("gateway handler failed", exc_info=task.exception())
            self.send(error_response(500, "internal gateway error; see the mlfn dev log"), False)
        self._busy = False
        if self._queue and self.transport is not None:
            self._start(self._queue.popleft())

    def send(self, data: bytes, keep_alive: bool) -> None:
        """Write a whole response; close the connection unless ``keep_alive``."""
        if self.transport is None:
            return
        self.transport.write(data)
        if not keep_alive or self.closing:
            self.transport.close()
            self.transport = None

    def finish(self, keep_alive: bool) -> None:
        """A proxied response was fully written."""
        if (not keep_alive or self.closing) and self.transport is not None:
            self.transport.close()
            self.transport = None

    def pause_writing(self) -> None:
        """The client reads slower than the instance answers: stop reading the instance."""
        if self.upstream is not None and not self.upstream_paused:
            self.upstream.pause_reading()
            self.upstream_paused = True

    def resume_writing(self) -> None:
        self.release_upstream(keep=True)

    def release_upstream(self, *, keep: bool = False) -> None:
        """Resume reading the instance if it was paused; forget it unless ``keep``."""
        upstream = self.upstream
        if upstream is not None and self.upstream_paused and not upstream.is_closing():
            upstream.resume_reading()
        self.upstream_paused = False
        if not keep:
            self.upstream = None

    def close_if_idle(self) -> None:
        """Shutdown: close now if no request is being handled, else after it."""
        self.closing = True
        if not self._busy and self.transport is not None:
            self.transport.close()


class UpstreamError(Exception):
    """The instance failed the request; ``sent`` tells whether bytes reached the client."""

    def __init__(self, message: str, *, sent: bool, reused: bool, refused: bool = False) -> None:
        super().__init__(message)
        self.sent = sent
        self.reused = reused
        self.refused = refused  # never reached the instance: safe to send elsewhere


class _UpstreamConn(asyncio.Protocol):
    """One pooled connection to an instance; forwards response bytes to a client."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._client: DownstreamProtocol | None = None
        self._done: asyncio.Future[bool] | None = None
        self._received = 0
        self._head = False
        self.uses = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def begin(self, client: DownstreamProtocol, head: bool) -> asyncio.Future[bool]:
        self._client = client
        client.upstream = self.transport
        self._received = 0
        self._head = head
        self._parser = httptools.HttpResponseParser(self)
        self._done = asyncio.get_running_loop().create_future()
        self.uses += 1
        return self._done

    def data_received(self, data: bytes) -> None:
        client = self._client
        if client is None:  # unsolicited bytes: the connection is unusable
            if self.transport is not None:
                self.transport.close()
            return
        self._received += len(data)
        if client.transport is not None:
            client.transport.write(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(f"malformed response from the instance: {err}")

    def on_headers_complete(self) -> None:
        if self._head:
            self.on_message_complete()

    def on_message_complete(self) -> None:
        done = self._done
        if done is not None and not done.done():
            self._release_client()
            done.set_result(bool(self._parser.should_keep_alive()))

    def _release_client(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.upstream is self.transport:
            client.release_upstream()

    def _fail(self, message: str) -> None:
        done = self._done
        if done is not None and not done.done():
            done.set_exception(
                UpstreamError(message, sent=self._received > 0, reused=self.uses > 1)
            )
        self._release_client()
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pool.discard(self)
        self._fail(
            f"the instance closed the connection before responding ({exc or 'EOF'}): "
            "it crashed or was stopped; see its log lines"
        )


class UpstreamPool:
    """Keep-alive connections to one instance (``host:port``)."""

    def __init__(self, host: str, port: int, max_idle: int = 64) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self._idle: list[_UpstreamConn] = []
        self._all: set[_UpstreamConn] = set()

    async def _get(self) -> _UpstreamConn:
        while self._idle:
            conn = self._idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                lambda: _UpstreamConn(self), self.host, self.port
            )
        except OSError as err:
            raise UpstreamError(
                f"cannot connect to the instance on port {self.port}: {err.strerror or err}",
                sent=False,
                reused=False,
                refused=True,
            ) from err
        self._all.add(conn)
        return conn

    def discard(self, conn: _UpstreamConn) -> None:
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    async def forward(self, data: bytes, client: DownstreamProtocol, head: bool) -> bool:
        """Send one encoded request; stream the response to ``client``.

        Returns whether the response allows keeping the client connection open.
        Retries once on a fresh connection when a reused one was closed by the
        instance before any response byte (an idle keep-alive timeout).

        Raises:
            UpstreamError: the instance could not be reached or failed mid-response.
        """
        first_error: UpstreamError | None = None
        for attempt in (1, 2):
            try:
                conn = await self._get()
            except UpstreamError:
                if first_error is not None:  # the instance is gone: report what happened first
                    raise first_error from None
                raise
            done = conn.begin(client, head)
            assert conn.transport is not None
            conn.transport.write(data)
            try:
                keep = await done
            except UpstreamError as err:
                if attempt == 1 and err.reused and not err.sent:
                    first_error = err
                    continue
                raise
            except asyncio.CancelledError:
                if conn.transport is not None:
                    conn.transport.close()
                raise
            if keep and len(self._idle) < self.max_idle and conn.transport is not None:
                self._idle.append(conn)
            elif conn.transport is not None:
                conn.transport.close()
            return keep
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close every connection (the instance is gone or going)."""
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
