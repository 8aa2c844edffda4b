"""``inference.GRPCInferenceService`` beside HTTP, in the same process and the same App.

Every RPC goes through the App: readiness and the concurrency limit
(:meth:`~runtime.server.app.App.guarded`), the dispatcher's OIP core
(:meth:`~runtime.server.dispatch.Dispatcher.oip_reply`, so the batcher coalesces gRPC
and HTTP requests into the same batches), the same metrics and request ids in the log.
Errors are the server's :class:`~runtime.server.errors.HttpError` classes, answered with
the gRPC status code each one names (:func:`runtime.server.errors.grpc_status`), here
and nowhere else.

The transport is :mod:`runtime.server.grpc.h2c`: under gunicorn's gevent worker
(inference servers) each call is a greenlet on the worker's one event loop, like the
HTTP requests; every worker process listens on the same port (``SO_REUSEPORT``), so the
kernel spreads connections over all of them. Under threads (a retrain function's
gthread worker) each call is a thread.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from runtime.logs import request_context
from runtime.server import errors as e
from runtime.server.grpc import codec
from runtime.server.grpc import grpc_predict_v2_pb2 as pb
from runtime.server.grpc.h2c import H2Server, Reply

if TYPE_CHECKING:
    from runtime.server.app import App

__all__ = ["SERVICE", "GrpcServer", "InferenceService", "serve_grpc"]

log = logging.getLogger("mlfn.server")

SERVICE = "/inference.GRPCInferenceService/"
"""The path prefix of the protocol's methods (``/inference.GRPCInferenceService/ModelInfer``)."""


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def _concurrency() -> dict[str, Any]:
    """How the transport runs calls: greenlets in a gevent worker (replies of one loop
    turn sent together); else its default, a thread per call."""
    if not _gevent_patched():
        return {}
    gevent = sys.modules["gevent"]
    # spawn_raw: a bare greenlet; gevent.spawn also records the spawning stack (line
    # numbers of ten frames) for every call
    return {"spawn": gevent.spawn_raw, "defer": gevent.get_hub().loop.run_callback}


class InferenceService:
    """The six OIP RPCs of one function's App (model repository RPCs: UNIMPLEMENTED)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.spec = app.spec
        self._reader = codec.RequestReader()
        self._methods: dict[str, tuple[Any, Callable[[Any], Any]]] = {
            "ServerLive": (pb.ServerLiveRequest, lambda r: pb.ServerLiveResponse(live=True)),
            "ServerReady": (
                pb.ServerReadyRequest,
                lambda r: pb.ServerReadyResponse(ready=self.app.ready),
            ),
            "ModelReady": (pb.ModelReadyRequest, self._model_ready),
            "ServerMetadata": (
                pb.ServerMetadataRequest,
                lambda r: pb.ServerMetadataResponse(
                    name="mlfn", version="2", extensions=["binary_tensor_data"]
                ),
            ),
            "ModelMetadata": (pb.ModelMetadataRequest, self._model_metadata),
            "ModelInfer": (pb.ModelInferRequest, self._infer),
        }

    # --- one place for ids, metrics, logs and status codes ------------------------------

    def __call__(self, path: str, metadata: Mapping[str, str], message: bytes) -> Reply:
        """Answer one call of ``path`` (the transport's :data:`~.h2c.Handler`)."""
        method = path[len(SERVICE) :] if path.startswith(SERVICE) else ""
        entry = self._methods.get(method)
        if entry is None:
            return Reply(e.GRPC_STATUS["UNIMPLEMENTED"], f"Method not found: {path}")
        rid = metadata.get("x-request-id") or e.new_request_id()
        trailers = (("x-request-id", rid),)
        metrics = self.app.metrics
        started = time.perf_counter()
        status = 200
        failure: e.HttpError
        metrics.in_flight.inc()
        try:
            with request_context(rid):
                try:
                    if method == "ModelInfer":
                        return Reply(0, "", self._infer_message(message), trailers)
                    kind, answer = entry
                    body = answer(_parse(kind, method, message)).SerializeToString()
                    return Reply(0, "", body, trailers)
                except e.HttpError as err:
                    failure = err
                    level = logging.WARNING if err.status >= 500 else logging.INFO
                    log.log(level, "gRPC %s %s", err.grpc, err.message, extra={"error_id": rid})
                except Exception as err:
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
                extra = tuple((k.lower(), str(v)) for k, v in failure.headers.items())
                return Reply(e.grpc_status(failure), failure.message, None, trailers + extra)
        finally:
            metrics.in_flight.dec()
            metrics.observe(status, time.perf_counter() - started)

    # --- the RPCs -----------------------------------------------------------------------

    def _model_ready(self, request: Any) -> Any:
        self.app.check_model_name(request.name)
        return pb.ModelReadyResponse(ready=self.app.ready)

    def _model_metadata(self, request: Any) -> Any:
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

    def _infer(self, request: Any) -> Any:
        self.app.check_model_name(request.model_name)
        payload, arrays = codec.request_payload(request)
        return codec.response_message(self._reply(payload, arrays, request.model_version))

    def _infer_message(self, message: bytes) -> bytes:
        """``ModelInfer`` from the message's bytes to the reply's: the common request
        through :class:`~.codec.RequestReader` (its head parsed once), any other as
        :meth:`_infer` reads it."""
        fast = self._reader.read(message)
        if fast is None:
            request = _parse(pb.ModelInferRequest, "ModelInfer", message)
            self.app.check_model_name(request.model_name)
            payload, arrays = codec.request_payload(request)
            version = request.model_version
        else:
            self.app.check_model_name(fast.model_name)
            payload, arrays, version = fast.payload, fast.arrays, fast.model_version
        return codec.encode_response(self._reply(payload, arrays, version, kept=fast is not None))

    def _reply(
        self, payload: dict[str, Any], arrays: Any, version: str, *, kept: bool = False
    ) -> dict[str, Any]:
        pinned = version or None
        d = self.app.dispatcher
        return self.app.guarded(
            lambda: d.oip_reply(payload, arrays, pinned, arrays_out=True, kept=kept)
        )


def _parse(kind: Any, method: str, message: bytes) -> Any:
    try:
        return kind.FromString(message)
    except DecodeError as err:
        raise e.BadRequest(f"the {method} request does not parse: {err}") from None


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
        server = H2Server(
            InferenceService(self.app),
            max_message=self.app.settings.server.max_body_bytes,
            **_concurrency(),
        )
        try:
            bound = server.bind(self.host, self.requested_port)
        except OSError as err:
            raise OSError(
                f"gRPC cannot listen on {self.host}:{self.requested_port} "
                f"({err.strerror or err}); pick another port with --grpc-port or "
                "MLFN_GRPC_PORT (0: any free one)"
            ) from err
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
        self._server.stop(self.app.settings.server.drain_seconds)
        log.info("gRPC server stopped", extra={"grpc_port": self.port})


def serve_grpc(app: App, host: str, port: int, *, when_ready: bool = True) -> GrpcServer:
    """Serve ``app``'s function over gRPC on ``host:port`` (0: a free port) until it closes.

    With ``when_ready`` the port opens once the model is loaded (a background greenlet or
    thread waits); otherwise now.

    Raises:
        OSError: ``port`` is taken (checked now, also when binding waits for the model).
    """
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
