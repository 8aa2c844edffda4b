"""The first delivery attempt of every event, on one asyncio loop: no thread per request.

A dispatcher's common case is an event that its sink takes at the first attempt. Run
on the delivery thread pool, each such event costs several thread wake-ups (hand-off to
a delivery thread, the response wakes it, its completion wakes the next); on a busy
machine each wake-up waits for a core and for the GIL. Here one loop thread owns
keep-alive connections to the sinks (a pool per sink), writes each request in one call,
parses responses with ``httptools`` as they arrive, and calls back on the loop thread.
Everything else (a failure to retry with backoff, a reply to produce, a dead letter)
goes on to the delivery threads with this first response, so retries, dead-lettering
and replies run the one code path they always did (:func:`eventing.delivery.deliver`).

Example:
    >>> poster = AsyncPoster().start()                                       # doctest: +SKIP
    >>> poster.post(("127.0.0.1", 8080, "/", "127.0.0.1:8080"), msg, 10.0, print)  # doctest: +SKIP
    >>> poster.close()                                                       # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import httptools

from eventing.delivery import Response
from runtime.events import HttpMessage

__all__ = ["AsyncPoster", "Target"]

log = logging.getLogger(__name__)

Target = tuple[str, int, str, str]
"""``(host, port, path, Host header)`` of an ``http://`` sink."""

Done = Callable[[Response], None]


def request_bytes(target: Target, msg: HttpMessage) -> bytes:
    """One HTTP/1.1 POST of ``msg``; raises ValueError for a header with a line break."""
    _, _, path, host = target
    head = [f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(msg.body)}\r\n"]
    for k, v in msg.headers.items():
        text = f"{k}: {v}\r\n"
        if text.count("\n") != 1 or text.count("\r") != 1:
            raise ValueError(f"header {k!r} has a line break in its name or value")
        head.append(text)
    head.append("\r\n")
    return "".join(head).encode("latin-1") + msg.body


class _Client(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its response parsed as it comes."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.done: Done | None = None
        self.raw = b""
        self.got = 0
        self.reused = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False

    # --- asyncio --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(f"malformed response: {err}", stale=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.done is not None:
            stale = self.got == 0 and self.reused
            self._fail(f"connection closed before a response ({exc or 'EOF'})", stale=stale)

    # --- httptools ------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, chunk: bytes) -> None:
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # a 1xx nobody asked for: the real answer follows
            self.headers, self.body = {}, []
            return
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        resp = Response(status, body, self.headers)
        keep = self.parser.should_keep_alive()
        self._finish(resp)
        if keep and not self.closed:
            self.pool.release(self)
        else:
            self.close()

    # --- requests -------------------------------------------------------------------

    def send(self, raw: bytes, timeout_s: float | None, done: Done, *, reused: bool) -> None:
        assert self.transport is not None
        self.done, self.raw, self.got, self.reused = done, raw, 0, reused
        self.status, self.headers, self.body = 0, {}, []
        if timeout_s is not None:
            self.timer = self.pool.loop.call_later(timeout_s, self._timeout, timeout_s)
        self.transport.write(raw)

    def _timeout(self, timeout_s: float) -> None:
        self._fail(f"ReadTimeoutError: no response in {timeout_s}s", stale=False)
        self.close()

    def _finish(self, resp: Response) -> None:
        done, self.done = self.done, None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if done is not None:
            try:
                done(resp)
            except Exception:  # the callback must not kill the loop
                log.exception("delivery callback failed")

    def _fail(self, error: str, *, stale: bool) -> None:
        if self.done is None:
            return
        if stale:  # a kept-alive connection the sink had closed: nothing was delivered
            done, raw, self.done = self.done, self.raw, None
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.pool.submit(raw, None, done, fresh=True)
            return
        self._finish(Response(None, error=error))
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self.pool.forget(self)


class _Pool:
    """Idle keep-alive connections to one sink."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> None:
        self.loop = loop
        self.host, self.port = host, port
        self.idle: deque[_Client] = deque()
        self.all: set[_Client] = set()

    def submit(
        self, raw: bytes, timeout_s: float | None, done: Done, *, fresh: bool = False
    ) -> None:
        while self.idle and not fresh:
            client = self.idle.pop()
            if not client.closed:
                client.send(raw, timeout_s, done, reused=True)
                return
        self.loop.create_task(self._connect(raw, timeout_s, done))

    async def _connect(self, raw: bytes, timeout_s: float | None, done: Done) -> None:
        try:
            connect = self.loop.create_connection(lambda: _Client(self), self.host, self.port)
            _, client = await asyncio.wait_for(connect, timeout_s)
        except (OSError, TimeoutError) as err:
            done(Response(None, error=f"{type(err).__name__}: {err}"))
            return
        self.all.add(client)
        client.send(raw, timeout_s, done, reused=False)

    def release(self, client: _Client) -> None:
        self.idle.append(client)

    def forget(self, client: _Client) -> None:
        self.all.discard(client)
        with contextlib.suppress(ValueError):
            self.idle.remove(client)

    def close(self) -> None:
        for client in list(self.all):
            client.close()


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where there is one (its transports write and read in C), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class AsyncPoster:
    """A loop thread that POSTs to ``http://`` sinks and calls back with each response.

    ``done`` callbacks run on the loop thread; they may call :meth:`post` again (the
    next event of a lane), which then starts at once, without a hand-off.
    """

    def __init__(self, name: str = "mlfn-deliver") -> None:
        self._loop = _new_loop()
        self._pools: dict[tuple[str, int], _Pool] = {}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False

    def start(self) -> AsyncPoster:
        self._thread.start()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        for pool in self._pools.values():
            pool.close()
        # let the transports' close callbacks run, then free the loop
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    @property
    def on_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def post(self, target: Target, msg: HttpMessage, timeout_s: float | None, done: Done) -> None:
        """POST ``msg`` to ``target``; ``done(response)`` later, on the loop thread.

        Raises:
            ValueError: a header has a line break (raised here, in the caller's thread).
            RuntimeError: the poster is closed.
        """
        self.post_many([(target, msg, timeout_s, done)])

    def post_many(
        self, items: list[tuple[Target, HttpMessage | bytes, float | None, Done]]
    ) -> None:
        """Several posts with one hand-off to the loop (a poll's worth of events).

        A message given as bytes is a whole request already (:mod:`eventing.wire`).
        """
        if self._closed:
            raise RuntimeError("the poster is closed")
        prepared = [
            (t, m if isinstance(m, bytes) else request_bytes(t, m), timeout, done)
            for t, m, timeout, done in items
        ]
        if self.on_loop:
            self._start(prepared)
        else:
            self._loop.call_soon_threadsafe(self._start, prepared)

    def _start(self, items: list[tuple[Target, bytes, float | None, Done]]) -> None:
        for target, raw, timeout_s, done in items:
            host, port = target[0], target[1]
            pool = self._pools.get((host, port))
            if pool is None:
                pool = self._pools[(host, port)] = _Pool(self._loop, host, port)
            pool.submit(raw, timeout_s, done)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the loop; requests in flight get no callback (their events stay uncommitted)."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)
        elif not self._loop.is_closed():
            self._loop.close()

    def __enter__(self) -> AsyncPoster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
