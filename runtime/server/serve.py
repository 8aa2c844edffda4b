"""Serve one function under gunicorn (one worker process), programmatically.

One worker process, so the batcher and the concurrency limit see every request.
Inference functions run gunicorn's gevent worker: one OS thread, a greenlet per
connection, no hand-off between threads per request, and the batcher's primitives
cooperative (gevent patches ``threading``). Event and plain functions run the gthread
worker (``MLFN_THREADS`` threads), so that a long call (training) never stalls
``/healthz``. SIGTERM stops accepting connections, lets in-flight requests finish
within ``MLFN_DRAIN_SECONDS`` and exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import time
import warnings
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication

from runtime.function import Function
from runtime.server.app import App, create_app
from runtime.server.metrics import process_start_time
from runtime.settings import RuntimeSettings

if TYPE_CHECKING:
    from runtime.retraining.emit import EmitterFactory

__all__ = ["gunicorn_options", "run"]

log = logging.getLogger("mlfn.server")

WORKER_CONNECTIONS = 10_000


def gunicorn_options(
    function: Function, settings: RuntimeSettings, host: str, port: int
) -> dict[str, Any]:
    """The gunicorn settings ``run`` uses (pure; printed by tests and docs)."""
    return {
        "bind": f"{host}:{port}",
        "workers": 1,
        "worker_class": "gevent" if function.spec.kind == "inference" else "gthread",
        "threads": settings.server.threads,
        # connections, not requests: above it gevent stops accepting, and probes (/healthz,
        # /metrics) wait behind clients that were shed and rest (runtime/server/limits.py)
        "worker_connections": WORKER_CONNECTIONS,
        "graceful_timeout": math.ceil(settings.server.drain_seconds),
        "timeout": max(30, function.spec.timeout_seconds),
        "keepalive": 75,
        "backlog": 2048,
        "loglevel": "warning",
        "accesslog": None,
        "limit_request_line": 8190,
        "http_parser": "auto",  # gunicorn-h1c (a dependency, C) when importable
        "proc_name": f"mlfn-{function.name}",
        # gunicorn's control socket is one fixed path per user: several instances on one
        # machine (the local platform) would fight over it, and nothing here uses it.
        "control_socket_disable": True,
    }


# How long a stopping gevent worker keeps idle kept-alive connections open, for a request
# a client may already be sending (gunicorn's gthread worker lingers 2 s); checked every
# second, so idle connections close about 2 s after SIGTERM.
_STOP_KEEPALIVE_LINGER_S = 1.5


def _gevent_worker() -> type:
    """gunicorn's gevent worker, but a stopping worker closes idle kept-alive connections.

    gunicorn's own waits for them until ``graceful_timeout``: every scale-down behind a
    pooling proxy (Knative's queue-proxy) would take the whole drain period. Imported
    only when used, so gthread servers never load gevent.
    """
    import gevent
    from gunicorn.workers.ggevent import GeventWorker

    class Worker(GeventWorker):  # type: ignore[misc]
        def init_process(self) -> None:
            self._waiting: dict[Any, socket.socket] = {}  # greenlet -> its idle connection
            self._sockets: dict[Any, socket.socket] = {}
            self._stopping_since: float | None = None
            # gevent patches ssl after the master imported it (nothing here uses TLS)
            warnings.filterwarnings("ignore", message="Monkey-patching ssl after ssl")
            super().init_process()

        def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
            me = gevent.getcurrent()
            self._sockets[me] = client
            try:
                super().handle(listener, client, addr)
            finally:
                self._sockets.pop(me, None)
                self._waiting.pop(me, None)

        def timeout_ctx(self) -> Any:
            # entered while a connection waits for its next request
            return _Waiting(self, gevent.Timeout(self.cfg.keepalive, False))

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self._stopping_since is None:
                self._stopping_since = time.monotonic()
            super().handle_exit(sig, frame)

        def notify(self) -> None:  # every second, also while draining
            super().notify()
            if self.alive:
                return
            now = time.monotonic()
            if self._stopping_since is None:
                self._stopping_since = now
            elif now - self._stopping_since >= _STOP_KEEPALIVE_LINGER_S:
                for sock in list(self._waiting.values()):
                    # shut the OS socket (gevent's shutdown would fail the waiting read
                    # with an error): the read sees EOF, and the connection closes as
                    # after a client disconnect
                    with contextlib.suppress(OSError):
                        getattr(sock, "_sock", sock).shutdown(socket.SHUT_RD)

    class _Waiting:
        def __init__(self, worker: Worker, timeout: Any) -> None:
            self.worker = worker
            self.timeout = timeout

        def __enter__(self) -> None:
            me = gevent.getcurrent()
            sock = self.worker._sockets.get(me)
            if sock is not None:
                self.worker._waiting[me] = sock
            self.timeout.__enter__()

        def __exit__(self, *exc: Any) -> bool:
            self.worker._waiting.pop(gevent.getcurrent(), None)
            return bool(self.timeout.__exit__(*exc))

    return Worker


def _open_files(wanted: int) -> None:
    """Raise the soft limit of open files towards ``wanted`` (each connection is one)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any], factory: Any) -> None:
        self._options = options
        self._factory = factory
        self._app: App | None = None
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if key == "worker_class" and value == "gevent":
                value = _gevent_worker()
            self.cfg.set(key, value)
        self.cfg.set("worker_exit", self._worker_exit)
        self.cfg.set("when_ready", self._when_ready)

    def load(self) -> App:
        self._app = self._factory()
        return self._app

    def _when_ready(self, server: Any) -> None:
        urls = ", ".join(str(lst) for lst in server.LISTENERS)
        log.info("serving %s on %s", self._options["proc_name"], urls, extra={"urls": urls})

    def _worker_exit(self, server: Any, worker: Any) -> None:
        if self._app is not None:
            self._app.close()


def run(
    function: Function,
    settings: RuntimeSettings,
    port: int = 8080,
    host: str = "127.0.0.1",
    *,
    emitters: EmitterFactory | None = None,
    started_at: float | None = None,
) -> None:
    """Serve ``function`` until SIGTERM/SIGINT; returns after a graceful drain.

    The app (and its model) is created in the worker process, after gunicorn forks.
    ``port=0`` binds a free port (read it from the log line or the socket). ``emitters``
    are where a retrain function's announcements go (see :mod:`runtime.retraining.emit`).

    Example:
        >>> from runtime.registry import discover
        >>> run(discover("functions").get("predict"), RuntimeSettings(), port=8080)  # doctest: +SKIP
    """
    started = started_at if started_at is not None else process_start_time()
    options = gunicorn_options(function, settings, host, port)
    _open_files(WORKER_CONNECTIONS + 256)

    def factory() -> App:
        return create_app(function, settings, emitters=emitters, started_at=started)

    _Gunicorn(options, factory).run()
