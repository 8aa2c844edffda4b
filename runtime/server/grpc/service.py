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
import sys
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
    """A started gRPC server; :meth:`stop` drains it."""

    def __init__(self, server: Any, port: int, drain_seconds: float) -> None:
        self.server = server
        self.port = port
        self.drain_seconds = drain_seconds

    def stop(self) -> None:
        """Stop accepting RPCs; let those in flight finish within the drain period."""
        self.server.stop(self.drain_seconds).wait(self.drain_seconds + 1)
        log.info("gRPC server stopped", extra={"port": self.port})


_gevent_ready = False


def serve_grpc(app: App, host: str, port: int) -> GrpcServer:
    """Serve ``app``'s function over gRPC on ``host:port`` (0: a free port) until closed.

    The server stops when the app closes. Call it in the serving process after gevent
    patched it (gunicorn's worker), before anything else creates a gRPC object there.

    Raises:
        OSError: the port cannot be bound.
    """
    global _gevent_ready
    gevent = _gevent_patched()
    if gevent and not _gevent_ready:
        from grpc.experimental import gevent as grpc_gevent

        grpc_gevent.init_gevent()
        _gevent_ready = True
    settings = app.settings
    # under gevent the pool's "threads" are greenlets: cheap, and the App's limiter
    # (container concurrency + queue) bounds the work; with real threads keep it small
    workers = 1000 if gevent else settings.threads
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlfn-grpc"),
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(app), server)  # type: ignore[no-untyped-call]
    cause: Exception | None = None
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as err:
        bound, cause = 0, err
    if not bound:
        raise OSError(
            f"gRPC cannot listen on {host}:{port} ({cause or 'address in use?'}); pick another "
            "port with --grpc-port or MLFN_GRPC_PORT (0: any free one)"
        )
    server.start()
    running = GrpcServer(server, bound, settings.drain_seconds)
    app.on_close(running.stop)
    log.info(
        "serving %s over gRPC on %s:%d", app.spec.name, host, bound, extra={"grpc_port": bound}
    )
    return running
