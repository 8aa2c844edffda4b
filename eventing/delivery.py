"""HTTP delivery with Knative's retry semantics: one POST, and the retry loop around it.

:func:`deliver` is pure logic over injected ``send``/``wait``/``record_failure``
callables, so tests drive it without a clock or a network. :class:`HttpSender` is the
thin HTTP client: for ``http://`` sinks a lean HTTP/1.1 client on keep-alive
connections of its own (one per delivery thread and sink, parsed by ``httptools``, the
request in one ``sendall``), since every event a dispatcher delivers is one request;
``https://`` sinks go through urllib3.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlsplit

import httptools
import urllib3

from runtime.events import HttpMessage
from runtime.spec import Delivery

__all__ = ["HttpSender", "Outcome", "Response", "deliver", "http_target", "is_retryable"]

_RETRYABLE = frozenset({404, 408, 409, 429})


@dataclass(frozen=True, slots=True)
class Response:
    """What one attempt got: a status and body, or ``error`` when no response came."""

    status: int | None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        if self.status is None:
            return f"no response: {self.error}"
        return f"HTTP {self.status}"


def is_retryable(r: Response) -> bool:
    """Knative retries connection errors, timeouts, 404, 408, 409, 429 and 5xx."""
    return r.status is None or r.status in _RETRYABLE or r.status >= 500


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of a delivery: delivered, or failed with the last response.

    ``failures`` counts failed attempts, including those made before a restart.
    """

    delivered: bool
    response: Response
    failures: int


def deliver(
    send: Callable[[], Response],
    delivery: Delivery,
    *,
    failures_before: int = 0,
    record_failure: Callable[[int], None] = lambda n: None,
    wait: Callable[[float], bool],
) -> Outcome | None:
    """Attempt delivery until success, a non-retryable answer, or ``delivery.retry`` retries.

    Args:
        send: makes one attempt.
        delivery: retry count and backoff.
        failures_before: failed attempts already made (carried across restarts).
        record_failure: called with the failure count before each backoff, to persist it.
        wait: sleeps the given seconds; returns False when the dispatcher is stopping.

    Returns:
        The outcome, or None when stopped during a backoff (nothing may be committed).
    """
    failures = failures_before
    if failures > delivery.retry:
        return Outcome(False, Response(None, error="retries exhausted before a restart"), failures)
    while True:
        r = send()
        if r.ok:
            return Outcome(True, r, failures)
        failures += 1
        if not is_retryable(r) or failures > delivery.retry:
            return Outcome(False, r, failures)
        record_failure(failures)
        if not wait(delivery.backoff(failures).total_seconds()):
            return None


class HttpSender:
    """POSTs messages over pooled keep-alive connections; never raises for HTTP outcomes.

    Each delivery thread keeps its own connection per sink (no lock, no hand-off): the
    dispatcher's lanes bound how many requests are in flight, so the connections are as
    many as the threads that deliver.
    """

    def __init__(self, pool_size: int = 64) -> None:
        self._pool = urllib3.PoolManager(maxsize=pool_size, block=False, retries=False)
        self._local = threading.local()
        self._all: set[_Connection] = set()
        self._lock = threading.Lock()
        self._closed = False

    def post(self, url: str, msg: HttpMessage, timeout_s: float | None) -> Response:
        """One attempt. Connection errors and timeouts come back as ``Response(None, error=...)``."""
        target = http_target(url)
        if target is None:
            return self._post_urllib3(url, msg, timeout_s)
        host, port, path, host_header = target
        conns: dict[tuple[str, int], _Connection] = getattr(self._local, "conns", None) or {}
        self._local.conns = conns
        conn = conns.get((host, port))
        if conn is not None and conn.closed:  # the sink said Connection: close
            conn = None
        reused = conn is not None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for _ in range(2):
            if conn is None:
                try:
                    conn = self._open(host, port, deadline)
                except OSError as err:
                    return Response(None, error=f"{type(err).__name__}: {err}")
                conns[(host, port)] = conn
            try:
                return conn.post(path, host_header, msg, deadline)
            except _Stale:
                # the sink closed a kept-alive connection before reading this request:
                # nothing was delivered, so send it again on a new one (once)
                conns.pop((host, port), None)
                conn.close()
                conn = None
                if not reused:
                    return Response(None, error="the connection closed before a response")
                reused = False
            except (OSError, _Malformed) as err:
                conns.pop((host, port), None)
                conn.close()
                if isinstance(err, TimeoutError | socket.timeout):
                    return Response(None, error=f"ReadTimeoutError: no response in {timeout_s}s")
                return Response(None, error=f"{type(err).__name__}: {err}")
        return Response(None, error="the connection closed before a response")  # pragma: no cover

    def _open(self, host: str, port: int, deadline: float | None) -> _Connection:
        timeout = None if deadline is None else max(0.001, deadline - time.monotonic())
        conn = _Connection(socket.create_connection((host, port), timeout=timeout), self)
        with self._lock:
            if self._closed:
                conn.close()
                raise ConnectionAbortedError("the sender is closed")
            self._all.add(conn)
        return conn

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._all.discard(conn)

    def _post_urllib3(self, url: str, msg: HttpMessage, timeout_s: float | None) -> Response:
        try:
            r = self._pool.request(
                "POST",
                url,
                body=msg.body,
                headers=msg.headers,
                timeout=urllib3.Timeout(total=timeout_s) if timeout_s else None,
                retries=False,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as err:
            return Response(None, error=f"{type(err).__name__}: {err}")
        return Response(r.status, r.data or b"", {k.lower(): v for k, v in r.headers.items()})

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, set()
        for conn in conns:
            conn.close()
        self._pool.clear()


@lru_cache(maxsize=256)
def http_target(url: str) -> tuple[str, int, str, str] | None:
    """``(host, port, path, Host header)`` of an ``http://`` URL; None for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    port = parts.port or 80
    return parts.hostname, port, path, parts.netloc


class _Stale(Exception):
    """A kept-alive connection was closed by the sink before any byte of a response."""


class _Malformed(Exception):
    """The sink's response is not HTTP/1.1."""


class _Reply:
    """httptools' callbacks for one response."""

    __slots__ = ("body", "done", "headers", "status")

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, chunk: bytes) -> None:
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.done = True


class _Connection:
    """One keep-alive HTTP/1.1 connection to a sink, used by one thread at a time."""

    def __init__(self, sock: socket.socket, owner: HttpSender) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.closed = False
        self._owner = owner

    def post(self, path: str, host: str, msg: HttpMessage, deadline: float | None) -> Response:
        head = [f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(msg.body)}\r\n"]
        for k, v in msg.headers.items():
            text = f"{k}: {v}\r\n"
            if text.count("\n") != 1 or text.count("\r") != 1:
                raise ValueError(f"header {k!r} has a line break in its name or value")
            head.append(text)
        head.append("\r\n")
        sock = self.sock
        sock.settimeout(None if deadline is None else max(0.001, deadline - time.monotonic()))
        try:
            sock.sendall("".join(head).encode("latin-1") + msg.body)
        except (BrokenPipeError, ConnectionResetError) as err:
            raise _Stale() from err
        while True:
            reply = _Reply()
            parser = httptools.HttpResponseParser(reply)
            got = 0
            while not reply.done:
                if deadline is not None:
                    sock.settimeout(max(0.001, deadline - time.monotonic()))
                try:
                    data = sock.recv(65536)
                except ConnectionResetError as err:
                    if got == 0:
                        raise _Stale() from err
                    raise
                if not data:
                    if got == 0:
                        raise _Stale()
                    if reply.status and "content-length" not in reply.headers:
                        break  # a body delimited by the end of the connection
                    raise ConnectionError("the sink closed the connection mid-response")
                got += len(data)
                try:
                    parser.feed_data(data)
                except httptools.HttpParserError as err:
                    raise _Malformed(f"malformed response: {err}") from err
                reply.status = parser.get_status_code()
            if reply.status >= 200:
                break  # 1xx (a 100 Continue nobody asked for) precede the real answer
        if not parser.should_keep_alive():
            self.close()
        body = reply.body[0] if len(reply.body) == 1 else b"".join(reply.body)
        return Response(reply.status, body, reply.headers)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()
        self._owner._forget(self)
