"""Serve one function under gunicorn (gthread, one worker process), programmatically.

One worker process, so the batcher and the concurrency limit see every request; threads
(``MLFN_THREADS``) carry the concurrency. SIGTERM stops accepting connections, lets
in-flight requests finish within ``MLFN_DRAIN_SECONDS`` and exits 0.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from gunicorn.app.base import BaseApplication

from runtime.function import Function
from runtime.server.app import App, create_app
from runtime.server.metrics import process_start_time
from runtime.settings import Settings

__all__ = ["gunicorn_options", "run"]

log = logging.getLogger("mlfn.server")


def gunicorn_options(
    function: Function, settings: Settings, host: str, port: int
) -> dict[str, Any]:
    """The gunicorn settings ``run`` uses (pure; printed by tests and docs)."""
    return {
        "bind": f"{host}:{port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": settings.threads,
        "graceful_timeout": math.ceil(settings.drain_seconds),
        "timeout": max(30, function.spec.timeout_seconds),
        "keepalive": 75,
        "backlog": 2048,
        "loglevel": "warning",
        "accesslog": None,
        "limit_request_line": 8190,
        "proc_name": f"mlfn-{function.name}",
        # gunicorn's control socket is one fixed path per user: several instances on one
        # machine (the local platform) would fight over it, and nothing here uses it.
        "control_socket_disable": True,
    }


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any], factory: Any) -> None:
        self._options = options
        self._factory = factory
        self._app: App | None = None
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
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
    settings: Settings,
    port: int = 8080,
    host: str = "127.0.0.1",
    *,
    batching: bool = True,
    started_at: float | None = None,
) -> None:
    """Serve ``function`` until SIGTERM/SIGINT; returns after a graceful drain.

    The app (and its model) is created in the worker process, after gunicorn forks.
    ``port=0`` binds a free port (read it from the log line or the socket).

    Example:
        >>> from runtime.registry import discover
        >>> run(discover("functions").get("predict"), Settings(), port=8080)  # doctest: +SKIP
    """
    started = started_at if started_at is not None else process_start_time()
    options = gunicorn_options(function, settings, host, port)

    def factory() -> App:
        return create_app(function, settings, batching=batching, started_at=started)

    _Gunicorn(options, factory).run()
