"""``inference.GRPCInferenceService`` beside HTTP, in the same process and the same App.

Every RPC goes through the App: readiness and the concurrency limit
(:meth:`~runtime.server.app.App.guarded`), the dispatcher's OIP core
(:meth:`~runtime.server.dispatch.Dispatcher.oip_reply`, so the batcher coalesces gRPC
and HTTP requests into the same batches), the same metrics and request ids in the log.
Errors are the server's :class:`~runtime.server.errors.HttpError` classes, answered with
the gRPC status code each one names (:func:`runtime.server.errors.grpc_code`).

Under gunicorn's gevent worker (inference servers) gRPC runs on gevent too
(``grpc.experimental.gevent``): handlers are greenlets on the worker's one event loop,
like the HTTP requests, so the batcher's cooperative primitives serve both.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from runtime.logs import request_context
from runtime.server import errors as e
from runtime.server.grpc import codec
from runtime.server.grpc import grpc_predict_v2_pb2 as pb
from runtime.server.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from runtime.server.app import App

__all__ = ["GrpcServer", "InferenceService", "serve_grpc"]

log = logging.getLogger("mlfn.server")
T = TypeVar("T")


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The six OIP RPCs of one function's App (model repository RPCs: UNIMPLEMENTED)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.spec = app.spec

    # --- one place for ids, metrics, logs and status codes ------------------------------

    def _answer(self, context: Any, call: Callable[[], T]) -> T:
        metadata = dict(context.invocation_metadata() or ())
        rid = str(metadata.get("x-request-id") or uuid.uuid4().hex)
        metrics = self.app.metrics
        started = time.perf_counter()
        status = 200
        failure: e.HttpError
        metrics.in_flight.inc()
        try:
            with request_context(rid):
                try:
                    return call()
                except e.HttpError as err:
                    failure = err
                    level = logging.WARNING if err.status >= 500 else logging.INFO
                    log.log(level, "gRPC %s %s", err.grpc, err.message, extra={"error_id": rid})
                except Exception as err:
                    status = 500
                    error_id = e.new_error_id()
                    log.error(
                        "%s raised %s: %s (error id %s)",
                        self.spec.name,
                        type(err).__name__,
                        err,
                        error_id,
                        exc_info=err,
                        extra={"error_id": error_id},
                    )
                    failure = e.InternalError(
                        f"{self.spec.name} failed with {type(err).__name__}; the traceback is "
                        f"in the server log under error id {error_id}"
                    )
                status = failure.status
                context.set_trailing_metadata((("x-request-id", rid),))
                context.abort(getattr(grpc.StatusCode, e.grpc_code(failure)), failure.message)
                raise AssertionError("unreachable: context.abort raises")  # pragma: no cover
        finally:
            metrics.in_flight.dec()
            metrics.observe(status, time.perf_counter() - started)

    # --- the RPCs -----------------------------------------------------------------------

    def ServerLive(self, request: Any, context: Any) -> Any:
        return self._answer(context, lambda: pb.ServerLiveResponse(live=True))

    def ServerReady(self, request: Any, context: Any) -> Any:
        return self._answer(context, lambda: pb.ServerReadyResponse(ready=self.app.ready))

    def ModelReady(self, request: Any, context: Any) -> Any:
        def ready() -> Any:
            self.app.check_model_name(request.name)
            return pb.ModelReadyResponse(ready=self.app.ready)

        return self._answer(context, ready)

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        return self._answer(
            context,
            lambda: pb.ServerMetadataResponse(
                name="mlfn", version="2", extensions=["binary_tensor_data"]
            ),
        )

    def ModelMetadata(self, request: Any, context: Any) -> Any:
        def metadata() -> Any:
            self.app.check_model_name(request.name)
            meta = self.app.dispatcher.oip_metadata()
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=[tensor(**t) for t in meta["inputs"]],
                outputs=[tensor(**t) for t in meta["outputs"]],
            )

        return self._answer(context, metadata)

    def ModelInfer(self, request: Any, context: Any) -> Any:
        def infer() -> Any:
            self.app.check_model_name(request.model_name)
            payload, arrays = codec.request_payload(request)
            version = request.model_version or None
            reply = self.app.guarded(
                lambda: self.app.dispatcher.oip_reply(payload, arrays, version)
            )
            return codec.response_message(reply)

        return self._answer(context, infer)


class GrpcServer:
    """The gRPC side of one App: it listens once the model is ready; :meth:`stop` drains it.

    Binding only when ready makes the port itself the readiness signal, which is what a
    Knative TCP readiness probe on an ``h2c`` port checks (a gRPC revision has no HTTP
    port to probe).
    """

    def __init__(self, app: App, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.error: str | None = None
        self._server: Any = None
        self._stopped = False

    def listen(self) -> None:
        """Bind and start now (the model need not be ready: RPCs answer UNAVAILABLE)."""
        settings = self.app.settings
        # under gevent the pool's "threads" are greenlets: cheap, and the App's limiter
        # (container concurrency + queue) bounds the work; with real threads keep it small
        workers = 1000 if _gevent_patched() else settings.server.threads
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlfn-grpc"),
            options=[
                ("grpc.max_receive_message_length", settings.server.max_body_bytes),
                ("grpc.max_send_message_length", -1),
                # several workers of one server may each serve the same port (the kernel
                # spreads connections), as gunicorn's workers share the HTTP one
                ("grpc.so_reuseport", 1),
            ],
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(self.app), server)  # type: ignore[no-untyped-call]
        where = f"{self.host}:{self.requested_port}"
        cause: Exception | None = None
        try:
            bound = server.add_insecure_port(where)
        except RuntimeError as err:
            bound, cause = 0, err
        if not bound:
            raise OSError(
                f"gRPC cannot listen on {where} ({cause or 'address in use?'}); pick another "
                "port with --grpc-port or MLFN_GRPC_PORT (0: any free one)"
            )
        server.start()
        self._server, self.port = server, bound
        log.info(
            "serving %s over gRPC on %s:%d",
            self.app.spec.name,
            self.host,
            bound,
            extra={"grpc_port": bound},
        )

    def listen_when_ready(self) -> None:
        """Wait for the model, then :meth:`listen` (run it in a thread or greenlet)."""
        while not self._stopped and not self.app.wait_ready(1.0):
            if self.app.load_error is not None:
                self.error = self.app.load_error
                log.error("gRPC not started: %s", self.error)
                return
        if self._stopped:
            return
        try:
            self.listen()
        except OSError as err:
            self.error = str(err)
            log.error("%s", err)

    def stop(self) -> None:
        """Stop accepting RPCs; let those in flight finish within the drain period."""
        self._stopped = True
        if self._server is None:
            return
        drain = self.app.settings.server.drain_seconds
        self._server.stop(drain).wait(drain + 1)
        log.info("gRPC server stopped", extra={"grpc_port": self.port})


_gevent_ready = False


def serve_grpc(app: App, host: str, port: int, *, when_ready: bool = True) -> GrpcServer:
    """Serve ``app``'s function over gRPC on ``host:port`` (0: a free port) until it closes.

    With ``when_ready`` the port opens once the model is loaded (a background greenlet or
    thread waits); otherwise now. Call it in the serving process after gevent patched it
    (gunicorn's worker), before anything else there creates a gRPC object.

    Raises:
        OSError: ``port`` is taken (checked now, also when binding waits for the model).
    """
    global _gevent_ready
    if _gevent_patched() and not _gevent_ready:
        from grpc.experimental import gevent as grpc_gevent

        grpc_gevent.init_gevent()
        _gevent_ready = True
    running = GrpcServer(app, host, port)
    app.on_close(running.stop)
    if not when_ready:
        running.listen()
        return running
    if port:
        _check_free(host, port)
    threading.Thread(target=running.listen_when_ready, name="mlfn-grpc-start", daemon=True).start()
    return running


def _check_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as the workers bind
        try:
            probe.bind((host, port))
        except OSError as err:
            raise OSError(
                f"gRPC cannot listen on {host}:{port}: {err.strerror or err}; pick another "
                "port with --grpc-port or MLFN_GRPC_PORT (0: any free one)"
            ) from err
