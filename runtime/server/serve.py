"""Serve one function under gunicorn: one worker process per CPU, programmatically.

One mechanism for every kind of function: gunicorn pre-forks N workers
(``MLFN_WORKERS``, default :func:`available_cpus`) on one listening socket, and each
worker builds its own app, model and batcher after the fork. What must hold for the
server as a whole lives in a shared-memory table made before the fork
(:mod:`runtime.server.fleet`): the concurrency limit and queue depth stay exact over all
workers, ``/readyz`` waits for every worker's model, and a model swap reaches them all.
One worker skips the table (the lean path).

Inference and event functions run gunicorn's gevent worker: one OS thread, a greenlet per
connection, no hand-off between threads per request, and the batcher's primitives
cooperative (gevent patches ``threading``). Plain HTTP functions (Flask user code) and
functions with a retrain policy (their training runs in a thread beside the server)
run the gthread worker (``MLFN_THREADS`` threads), so that a long call never stalls
``/healthz``. A function with a retrain policy runs one worker: its retrain loop is
single-flight per process, and two processes would train twice.

SIGTERM stops accepting connections, lets in-flight requests finish within
``MLFN_DRAIN_SECONDS`` and exits 0 (the master forwards it to every worker).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication

from runtime.function import Function
from runtime.server.app import App, create_app
from runtime.server.fleet import Fleet
from runtime.server.metrics import process_start_time
from runtime.settings import RuntimeSettings

if TYPE_CHECKING:
    from runtime.retraining.emit import EmitterFactory

__all__ = ["available_cpus", "gunicorn_options", "run", "worker_class", "worker_count"]

log = logging.getLogger("mlfn.server")

WORKER_CONNECTIONS = 10_000


_CGROUP = Path("/sys/fs/cgroup")


def available_cpus(cgroup: Path = _CGROUP) -> int:
    """The CPUs this process may use: the cgroup CPU quota (rounded up), capped by affinity.

    A container limited to ``cpu: 1500m`` reads 2 (cgroup v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us``/``cpu.cfs_period_us``); without a quota, the CPUs in the
    affinity mask (``taskset``, cpusets).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota: float | None = None
    try:
        text = (cgroup / "cpu.max").read_text().split()
        if len(text) == 2 and text[0] != "max":
            quota = int(text[0]) / int(text[1])
    except (OSError, ValueError, ZeroDivisionError):
        try:
            q = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
            period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
            if q > 0 and period > 0:
                quota = q / period
        except (OSError, ValueError):
            pass
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def worker_count(function: Function, settings: RuntimeSettings) -> int:
    """Worker processes for ``function``: ``MLFN_WORKERS``, else one per CPU.

    A function with a retrain policy gets one: its retrain loop (row counts, single-flight
    training) lives in the process.
    """
    if function.spec.retrain is not None:
        return 1
    return settings.server.workers or available_cpus()


def worker_class(function: Function) -> str:
    """``gevent`` for inference and event functions; ``gthread`` where a call may run long.

    Plain HTTP functions are arbitrary Flask code, and a retrain function trains in a
    thread beside the server: under gevent either would stall the worker's event loop.
    """
    if function.spec.kind == "http" or function.spec.retrain is not None:
        return "gthread"
    return "gevent"


def gunicorn_options(
    function: Function, settings: RuntimeSettings, host: str, port: int
) -> dict[str, Any]:
    """The gunicorn settings ``run`` uses (pure; printed by tests and docs)."""
    return {
        "bind": f"{host}:{port}",
        "workers": worker_count(function, settings),
        "worker_class": worker_class(function),
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


def _share_native_threads(workers: int) -> None:
    """Split the CPUs between the workers' native thread pools (BLAS, OpenMP).

    Each would start one thread per CPU: N workers would run N times too many threads
    for the cores, and a 64-row prediction would wait on its own threads' contention.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency; without it, no limit
        return
    threadpool_limits(max(1, available_cpus() // workers))


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
        workers = int(options["workers"])
        # made here, in the master before it forks: every worker maps the same table
        self._fleet = Fleet(workers) if workers > 1 else None
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if key == "worker_class" and value == "gevent":
                from runtime.server.worker import worker_class as mlfn_worker

                value = mlfn_worker()
            self.cfg.set(key, value)
        self.cfg.set("worker_exit", self._worker_exit)
        self.cfg.set("when_ready", self._when_ready)
        self.cfg.set("child_exit", self._child_exit)

    def load(self) -> App:  # in the worker, after the fork
        if self._fleet is not None:
            self._fleet.join()
            _share_native_threads(self._fleet.workers)
        self._app = self._factory(self._fleet)
        return self._app

    def _child_exit(self, server: Any, worker: Any) -> None:  # in the master
        if self._fleet is not None:
            self._fleet.leave(worker.pid)  # a worker killed mid-request leaks no slot

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
    grpc_port: int | None = None,
) -> None:
    """Serve ``function`` until SIGTERM/SIGINT; returns after a graceful drain.

    The app (and its model) is created in the worker process, after gunicorn forks.
    ``port=0`` binds a free port (read it from the log line or the socket). ``emitters``
    are where a retrain function's announcements go (see :mod:`runtime.retraining.emit`).
    With ``grpc_port`` (default: ``settings.server.grpc_port``; inference functions) the
    worker also serves the Open Inference Protocol over gRPC there, through the same app.

    Example:
        >>> from runtime.registry import discover
        >>> run(discover("functions").get("predict"), RuntimeSettings(), port=8080)  # doctest: +SKIP
    """
    started = started_at if started_at is not None else process_start_time()
    options = gunicorn_options(function, settings, host, port)
    grpc = grpc_port if grpc_port is not None else settings.server.grpc_port
    if function.spec.kind != "inference":
        grpc = None
    _open_files(WORKER_CONNECTIONS + 256)

    def factory(fleet: Fleet | None) -> App:
        app = create_app(function, settings, emitters=emitters, started_at=started, fleet=fleet)
        if grpc is not None:
            from runtime.server.grpc.service import serve_grpc

            serve_grpc(app, host, grpc)
        return app

    _Gunicorn(options, factory).run()
