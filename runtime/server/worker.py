"""mlfn's gunicorn worker: gevent, and a lean HTTP/1.1 loop straight into :meth:`App.handle`.

gunicorn's own gevent worker spends about three quarters of a small request in its
machinery (its request and WSGI environ objects, proxy-header policy, headers and body
sent in two system calls) and a quarter in the app. This worker keeps what gunicorn
does well (the master, pre-forking, signals, heartbeats, the accept loop and the
graceful stop) and replaces the per-connection loop: ``httptools`` (llhttp, C) parses,
the app gets a :class:`~runtime.server.app.Request` (no WSGI in between), and the whole
response leaves in one ``send`` (:func:`~runtime.server.sockets.sender`).

HTTP/1.1 as clients and proxies use it: keep-alive (HTTP/1.0 only when asked),
pipelining (answered in order), ``Expect: 100-continue``, chunked request bodies, ``HEAD``.
The body limit (``MLFN_MAX_BODY_BYTES``) is checked from ``Content-Length`` before the
body is read, and while a chunked one arrives: 413, and the connection closes. While the
server is full, a new connection whose first request (a complete ``POST``) is already
there is answered 503 from the accept callback (:func:`shed_at_accept`), any other
starts at once, and the worker looks for new connections between requests as well as
once a turn of its event loop (:meth:`_Tracker.between_requests`). A request
that does not parse gets 400 and the connection closes. Every status still comes from
:mod:`runtime.server.errors` through the app.

Draining: on SIGTERM gunicorn stops accepting; requests in flight finish (their response
says ``Connection: close``); a connection idle between requests is closed after
:data:`STOP_LINGER_S` (a request a client is already sending still gets in), so a
pooling proxy (Knative's queue-proxy) does not hold the worker for the whole drain.
"""

from __future__ import annotations

import contextlib
import gc
import socket
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple
from urllib.parse import unquote

import httptools

from runtime.server import errors as e
from runtime.server.app import App, Request, Response
from runtime.server.sockets import sender

__all__ = [
    "SATURATED_ACCEPTS",
    "STOP_LINGER_S",
    "ShedAtAccept",
    "serve_connection",
    "shed_at_accept",
    "worker_class",
]

STOP_LINGER_S = 1.5
"""How long a stopping worker keeps idle kept-alive connections open (checked each second)."""

SATURATED_ACCEPTS = 100
"""Connections a worker accepts per turn of its event loop while every slot is taken
(else 1)."""

GC_YOUNG_THRESHOLD = 20_000
"""Allocations (net of frees) between two collections of the youngest generation, once the
model is loaded (Python's default: 700). What is alive then is the requests in flight; at
ten times the limit some 350 of them (running and queued) hold their objects across each
collection, which the default threshold walked ten times more often, promoting them
to older generations that were walked again."""

ACCEPT_LOOK_S = 0.0005
"""While every slot is taken, how often a worker looks for new connections between the
requests it serves (a non-blocking ``accept``): a new client is shed within about this,
not after the event loop's turn (:meth:`_Tracker.between_requests`)."""

SWITCH_INTERVAL_S = 0.001
"""The most time gevent's hub spends running ready greenlets before it looks at sockets
again (it reads :func:`sys.getswitchinterval`; Python's default is 5 ms). A new
connection is accepted, and shed when the server is full, at the next look: this bounds
how long it waits behind a turn of admitted work."""

MAX_HEAD_BYTES = 64 * 1024
"""The most a request line and headers may take (gunicorn's limits are in this range)."""

_REASONS = {
    100: "Continue",
    200: "OK",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Message:
    """httptools' callbacks: the requests of one connection, parsed in order."""

    __slots__ = (
        "body",
        "complete",
        "continue_wanted",
        "head_bytes",
        "headers",
        "in_head",
        "in_message",
        "limit",
        "parser",
        "reject",
        "shed_check",
        "shedding",
        "size",
        "url",
    )

    def __init__(self, limit: int, shed_check: Callable[[str], bool] | None = None) -> None:
        self.limit = limit
        self.shed_check = shed_check
        self.parser: Any = None
        # each request: itself, keep-alive, HTTP/1.0, shed at header time
        self.complete: deque[tuple[Request, bool, bool, bool]] = deque()
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.in_message = False
        self.in_head = False
        self.head_bytes = 0
        self.continue_wanted = False
        self.reject: e.HttpError | None = None
        self.shedding = False

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = []
        self.size = 0
        self.shedding = False
        self.head_bytes = 0
        self.in_message = True
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = self.headers.get(key)
        self.headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.head_bytes > MAX_HEAD_BYTES:
            self.reject = _HeadTooLarge()
            return
        length = self.headers.get("content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                self.reject = e.BadRequest(f"Content-Length {length!r} is not a number")
                return
            if n > self.limit:
                self.reject = e.PayloadTooLarge(_too_large(f"{n} bytes", self.limit))
                return
        if self.headers.get("expect", "").lower() == "100-continue":
            self.continue_wanted = True
        check = self.shed_check
        if check is not None and check(self.parser.get_method().decode("latin-1")):
            self.shedding = True  # decided from the head: the body is skipped, not kept

    def on_body(self, chunk: bytes) -> None:
        if self.reject is not None or self.shedding:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            self.reject = e.PayloadTooLarge(_too_large("the body", self.limit))
            self.body = []
            return
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.in_message = False
        self.continue_wanted = False
        if self.reject is not None:
            return
        p = self.parser
        if self.shedding:
            keep, http10 = bool(p.should_keep_alive()), p.get_http_version() == "1.0"
            self.complete.append((Request("POST", "", self.headers, b""), keep, http10, True))
            return
        method = p.get_method().decode("latin-1")
        raw = self.url.split(b"?", 1)[0].decode("latin-1") or "/"
        path = unquote(raw) if "%" in raw else raw
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        keep = bool(p.should_keep_alive())
        http10 = p.get_http_version() == "1.0"
        self.complete.append((Request(method, path, self.headers, body), keep, http10, False))


def _too_large(what: str, limit: int) -> str:
    return (
        f"{what} is over the limit of {limit} bytes; "
        "send smaller requests or raise MLFN_MAX_BODY_BYTES"
    )


def encode(resp: Response, *, keep_alive: bool, http10: bool = False, head: bool = False) -> bytes:
    """The bytes of one HTTP/1.1 response, headers and body together."""
    status = resp.status
    parts = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"]
    for k, v in resp.headers.items():
        if "\n" in v or "\r" in v or "\n" in k or "\r" in k:
            raise ValueError(f"response header {k!r} contains a line break")
        parts.append(f"{k}: {v}\r\n")
    if status != 204 and status != 304:  # they have no body, and say no length
        parts.append(f"Content-Length: {len(resp.body)}\r\n")
    if not keep_alive:
        parts.append("Connection: close\r\n")
    elif http10:
        parts.append("Connection: keep-alive\r\n")
    parts.append("\r\n")
    head_bytes = "".join(parts).encode("latin-1")
    return head_bytes if head else head_bytes + resp.body


class _Tracker:
    """What the connections of a worker share: whether it is stopping, which of them are
    idle, and the look for new connections between requests while the server is full."""

    def __init__(
        self,
        accept_waiting: Callable[[], None] | None = None,
        saturated: Callable[[], bool] = lambda: False,
    ) -> None:
        self.alive = True
        self.idle: set[socket.socket] = set()
        self.accept_waiting = accept_waiting
        self.saturated = saturated
        self._next_look = 0.0

    def between_requests(self) -> None:
        """Accept the connections waiting, if every slot is taken and the last look was
        :data:`ACCEPT_LOOK_S` ago or more.

        The hub looks at the listening socket once per turn of the event loop, after
        every greenlet that was ready has run, and a turn of a full server runs a few
        hundred requests' steps: milliseconds. A new connection's request, which is
        shed (:func:`shed_at_accept`) or queued at once when it is accepted, waited for
        that turn; looked for between requests, it waits at most about this interval.
        """
        if self.accept_waiting is None or not self.saturated():
            return
        now = time.perf_counter()
        if now >= self._next_look:
            self._next_look = now + ACCEPT_LOOK_S
            self.accept_waiting()


def serve_connection(
    app: App, sock: socket.socket, tracker: Any, *, keepalive_s: float = 75.0
) -> None:
    """Answer the requests of one connection until it closes (or the worker stops)."""
    msg = _Message(app.settings.server.max_body_bytes, app.sheds)
    parser = httptools.HttpRequestParser(msg)
    msg.parser = parser
    sock.settimeout(keepalive_s)
    recv, sendall = sock.recv, sender(sock)
    idle = tracker.idle
    unparsed = 0
    while True:
        waiting = not msg.in_message
        if waiting:
            if not tracker.alive:
                return
            tracker.between_requests()
            idle.add(sock)
        try:
            data = recv(65536)
        except (TimeoutError, OSError):
            return
        finally:
            if waiting:
                idle.discard(sock)
        if not data:
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            _refuse(app, sendall, e.BadRequest("protocol upgrades are not supported here"))
            return
        except httptools.HttpParserError as err:
            _refuse(app, sendall, e.BadRequest(f"malformed HTTP request: {err}"))
            return
        if msg.in_head:  # a head still incomplete: count what it took so far
            unparsed += len(data)
            if unparsed > 2 * MAX_HEAD_BYTES:
                _refuse(app, sendall, _HeadTooLarge())
                return
        else:
            unparsed = 0
        while msg.complete:
            req, keep, http10, shed = msg.complete.popleft()
            resp = app.shed_response(_request_id(req.headers)) if shed else app.handle(req)
            keep = keep and tracker.alive
            try:
                out = encode(resp, keep_alive=keep, http10=http10, head=req.method == "HEAD")
            except ValueError as err:
                out = encode(app.crash_response(err), keep_alive=False)
                keep = False
            try:
                sendall(out)
            except OSError:
                return
            if not keep:
                return
            rest = app.rest_for(resp)
            if rest is not None:  # a shed answer: this connection waits its Retry-After
                rest()
                if not tracker.alive:
                    return
        if msg.reject is not None:
            _refuse(app, sendall, msg.reject)
            return
        if msg.continue_wanted:
            msg.continue_wanted = False
            if msg.shedding:  # answered before its body is sent; the framing ends here
                resp = app.shed_response(_request_id(msg.headers))
                with contextlib.suppress(OSError):
                    sendall(encode(resp, keep_alive=False))
                return
            try:
                sendall(_CONTINUE)
            except OSError:
                return


class ShedAtAccept(NamedTuple):
    """A new connection's first request, answered 503 from the accept callback."""

    keep: bool
    """The connection stays open (keep-alive): serve it once it has rested."""
    unsent: bytes
    """What of the answer the socket did not take at once (sent by the connection's
    greenlet)."""
    rest: Callable[[], None] | None
    """How the connection rests (its ``Retry-After``) before its next request is read."""


def shed_at_accept(app: App, sock: socket.socket, *, alive: bool = True) -> ShedAtAccept | None:
    """Answer a just-accepted connection's first request with a shed 503, if it is one.

    Called from the accept callback (in gevent's hub: nothing here may block or switch)
    while the lock-free look says a ``POST`` would be shed now. The bytes already there
    are peeked, not read: unless they are exactly one complete request that would be
    shed (a ``POST``, head and body, nothing after it), they stay for the normal path
    and this answers None. Otherwise the request is consumed and answered as
    :func:`serve_connection` answers it (same 503, metric and log), without a greenlet
    spawned first or a turn of the event loop in between.
    """
    if not app.sheds("POST"):
        return None
    raw = getattr(sock, "_sock", sock)
    try:
        data = raw.recv(MAX_HEAD_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # nothing there yet (or gone): the normal path waits for it
        return None
    if not data:
        return None
    msg = _Message(app.settings.server.max_body_bytes, app.sheds)
    parser = httptools.HttpRequestParser(msg)
    msg.parser = parser
    try:
        parser.feed_data(data)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return None  # the normal path answers it
    if len(msg.complete) != 1 or msg.in_message or msg.reject is not None:
        return None
    req, keep, http10, shed = msg.complete[0]
    if not shed:
        return None
    try:
        taken = raw.recv(len(data), socket.MSG_DONTWAIT)
    except OSError:
        return ShedAtAccept(False, b"", None)
    if len(taken) != len(data):  # cannot happen (the bytes were there); do not guess
        return ShedAtAccept(False, b"", None)
    keep = keep and alive
    resp = app.shed_response(_request_id(req.headers))
    out = encode(resp, keep_alive=keep, http10=http10)
    try:
        sent = raw.send(out, socket.MSG_DONTWAIT)
    except BlockingIOError:
        sent = 0
    except OSError:
        return ShedAtAccept(False, b"", None)
    return ShedAtAccept(keep, out[sent:], app.rest_for(resp) if keep else None)


class _HeadTooLarge(e.HttpError):
    status, code = 431, "headers_too_large"

    def __init__(self) -> None:
        super().__init__(f"the request line and headers are over {MAX_HEAD_BYTES} bytes")


def _refuse(app: App, sendall: Any, err: e.HttpError) -> None:
    """Answer a request that cannot be served (it did not parse, or is too large); close."""
    with contextlib.suppress(OSError):
        sendall(encode(app.error_response(err), keep_alive=False))


@contextlib.contextmanager
def _entry_points_read_once() -> Iterator[None]:
    """Within the block, ``importlib.metadata.entry_points`` scans the installed packages once.

    gevent's ``patch_all`` looks up its plugins' entry points once per patched module:
    25 scans of every installed distribution's metadata, most of a worker's boot time
    (2.3 s of 2.5 s from fork to ``/readyz`` 200, measured on a busy 2-core machine;
    0.45 s with this). The same entry points, read once.
    """
    from importlib import metadata

    real = metadata.entry_points
    everything: Any = real()  # EntryPoints (SelectableGroups on 3.11): both have select()

    def cached(**params: Any) -> Any:
        return everything.select(**params)

    metadata.entry_points = cached
    try:
        yield
    finally:
        metadata.entry_points = real


def _freeze_when_ready(app: App) -> None:
    """Once the model is loaded, move every object the worker holds then (modules, the
    model: some 330,000 for ``predict``) out of the garbage collector's way (``gc.freeze``).

    Otherwise each full collection walks them all: 100 ms and more during which the
    event loop stands still, every admitted request and every shed answer waiting. Then
    the youngest generation is collected less often (:data:`GC_YOUNG_THRESHOLD`).
    """
    while not app.wait_ready(60):
        if app.load_error is not None:
            return
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def worker_class() -> type:
    """The gunicorn worker class (gevent is imported only when a server uses it)."""
    import gevent
    import gunicorn.workers.ggevent as ggevent
    from gevent.pool import PoolFull
    from gevent.server import StreamServer
    from gunicorn.workers.ggevent import GeventWorker

    _ACCEPTING: list[AcceptLoop] = []  # the listeners of this process that accept now

    class AcceptLoop(StreamServer):  # type: ignore[misc]
        """gunicorn's accept loop, but not one connection per turn when every slot is taken.

        With several workers gunicorn accepts one connection per turn of a worker's
        event loop, so that connections spread over the workers. Under load a turn
        takes milliseconds, and a burst of a thousand connections then waits seconds in
        the kernel's accept queue, ``/healthz`` and ``/readyz`` behind it (a probe that
        times out restarts the container). Once every slot is taken a new connection's
        request waits in the queue or is shed, and the slots are shared out evenly
        between the workers with waiters (:class:`~runtime.server.fleet.SharedLimiter`),
        so where it lands no longer decides where work runs: then a turn accepts up to
        :data:`SATURATED_ACCEPTS`.
        """

        saturated: Callable[[], bool] = staticmethod(lambda: False)
        at_accept: Callable[[socket.socket], ShedAtAccept | None] = staticmethod(lambda sock: None)
        _calm: int = StreamServer.max_accept  # gevent's 100, unless gunicorn sets 1

        @property
        def max_accept(self) -> int:
            return SATURATED_ACCEPTS if self.saturated() else self._calm

        @max_accept.setter
        def max_accept(self, value: int) -> None:
            self._calm = value

        def start_accepting(self) -> None:
            super().start_accepting()
            if self not in _ACCEPTING:
                _ACCEPTING.append(self)

        def stop_accepting(self) -> None:
            super().stop_accepting()
            with contextlib.suppress(ValueError):
                _ACCEPTING.remove(self)

        @staticmethod
        def accept_waiting() -> None:
            """Accept, now, the connections waiting on every listener of this process
            that accepts, as the hub's turn would (from a greenlet: nothing here blocks;
            a connection started at once runs first, see :meth:`_start_now`). A failed
            accept is left to the hub's turn, which backs off."""
            for server in list(_ACCEPTING):
                for _ in range(server.max_accept):
                    if server.full():
                        break
                    try:
                        args = server.do_read()
                    except OSError:
                        break
                    if not args:
                        break
                    try:
                        server.do_handle(*args)
                    except Exception:  # as the hub's accept reports it; the caller goes on
                        server.loop.handle_error((args[1:], server), *sys.exc_info())

        def _start_now(self, client: socket.socket, address: Any) -> None:
            """Run the connection's greenlet now, until it first waits, not at the next
            turn of the event loop (where a spawned one starts).

            Its request was not shed at accept: the queue had room. A turn of a full
            server takes milliseconds, and its room was often taken by then, so the
            request was shed after all, a turn late. Started now it takes its place in
            the queue (or is shed) at once. Called from a greenlet (a look between
            requests), that greenlet goes on at the next turn, as after ``sleep(0)``.
            """

            def run() -> None:
                try:
                    self.handle(client, address)
                finally:
                    self.do_close(client, address)

            connection = gevent.Greenlet(run)
            if self.pool is not None:
                try:
                    self.pool.add(connection, blocking=False)
                except PoolFull:
                    self.do_close(client, address)
                    raise
            here, hub = gevent.getcurrent(), gevent.get_hub()
            if here is not hub:
                hub.loop.run_callback(here.switch)
            connection.switch()

        def do_handle(self, client: socket.socket, address: Any) -> None:
            """Shed a new connection's first request right here when it can be
            (:func:`shed_at_accept`); else, and for what follows, the connection's
            greenlet: started at once while every slot is taken (:meth:`_start_now`),
            spawned otherwise."""
            early = self.at_accept(client)
            if early is None:
                if self.saturated():
                    self._start_now(client, address)
                else:
                    super().do_handle(client, address)
            elif early.keep or early.unsent:
                super().do_handle(client, address, early)
            else:
                with contextlib.suppress(OSError):
                    client.close()

    class MlfnWorker(GeventWorker):  # type: ignore[misc]
        accept_loop = AcceptLoop

        def init_process(self) -> None:
            self._tracker = _Tracker()
            self._stopping_since: float | None = None
            # gevent patches ssl after the master imported it (nothing here uses TLS)
            warnings.filterwarnings("ignore", message="Monkey-patching ssl after ssl")
            super().init_process()

        def patch(self) -> None:
            with _entry_points_read_once():
                super().patch()

        def run(self) -> None:
            limiter = self.wsgi.limiter
            AcceptLoop.saturated = staticmethod(lambda: limiter.saturated)
            app, tracker = self.wsgi, self._tracker
            tracker.accept_waiting = AcceptLoop.accept_waiting
            tracker.saturated = lambda: limiter.saturated

            def at_accept(sock: socket.socket) -> ShedAtAccept | None:
                return shed_at_accept(app, sock, alive=tracker.alive)

            AcceptLoop.at_accept = staticmethod(at_accept)
            ggevent.StreamServer = AcceptLoop  # what gunicorn's run() builds, in this process
            for listener in self.sockets:
                _defer_accept(listener)
            sys.setswitchinterval(SWITCH_INTERVAL_S)  # greenlets share one thread: for the hub
            gevent.spawn(_freeze_when_ready, self.wsgi)
            super().run()

        def handle(
            self,
            listener: Any,
            client: socket.socket,
            addr: Any,
            early: ShedAtAccept | None = None,
        ) -> None:
            client.setblocking(True)
            with contextlib.suppress(OSError):
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                if early is not None:  # its first request was answered at accept
                    if early.unsent:
                        client.sendall(early.unsent)
                    if not early.keep:
                        return
                    if early.rest is not None:
                        early.rest()
                    if not self._tracker.alive:
                        return
                serve_connection(self.wsgi, client, self._tracker, keepalive_s=self.cfg.keepalive)
            except (gevent.GreenletExit, OSError):
                pass
            finally:
                with contextlib.suppress(OSError):
                    client.close()

        def handle_exit(self, sig: int, frame: Any) -> None:
            self._stop_now()
            super().handle_exit(sig, frame)

        def _stop_now(self) -> None:
            self._tracker.alive = False
            if self._stopping_since is None:
                self._stopping_since = time.monotonic()

        def notify(self) -> None:  # every second, also while draining
            super().notify()
            if self.alive:
                return
            self._stop_now()
            assert self._stopping_since is not None
            if time.monotonic() - self._stopping_since >= STOP_LINGER_S:
                for sock in list(self._tracker.idle):
                    # shut the OS socket's read side: the waiting recv sees EOF and the
                    # connection closes as after a client disconnect
                    with contextlib.suppress(OSError):
                        getattr(sock, "_sock", sock).shutdown(socket.SHUT_RD)

    return MlfnWorker


def _defer_accept(listener: Any) -> None:
    """Have the kernel hand over a TCP connection only once its first bytes are there
    (``TCP_DEFER_ACCEPT``, nginx's ``deferred``): a connection accepted early, as the
    looks between requests accept them, would otherwise often come before its request,
    and miss being shed at accept (:func:`shed_at_accept`)."""
    option = getattr(socket, "TCP_DEFER_ACCEPT", None)
    if option is None or listener.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        listener.setsockopt(socket.IPPROTO_TCP, option, 1)


def _request_id(headers: Mapping[str, str]) -> str | None:
    """The id a request brings (as :meth:`App.handle` reads it), if any."""
    return headers.get("x-request-id") or headers.get("ce-id")
