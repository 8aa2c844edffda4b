"""The server of one function: routes, errors, metrics, logs and readiness.

:class:`App` is a WSGI application (gunicorn serves it) and also answers in-process
through :meth:`App.handle` (``mlfn invoke`` and tests use that); both go through the
same routing and the same :class:`~runtime.server.dispatch.Dispatcher`. Every status
code comes from :mod:`runtime.server.errors`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from runtime.errors import StoreUnavailableError
from runtime.function import Function
from runtime.logs import request_context
from runtime.server import errors as e
from runtime.server.dispatch import Dispatcher, EventReply, ModelSource
from runtime.server.fleet import WATCH_SECONDS, Fleet, SharedLimiter
from runtime.server.limits import ConcurrencyLimiter, Paused, ShedReport, cooperative_sleep
from runtime.server.metrics import CONTENT_TYPE, Metrics
from runtime.server.nesting import check_depth
from runtime.server.oip_binary import HEADER as BINARY_HEADER
from runtime.settings import RuntimeSettings

if TYPE_CHECKING:
    from runtime.retraining.emit import EmitterFactory

__all__ = ["App", "Request", "Response", "create_app"]

log = logging.getLogger("mlfn.server")
T = TypeVar("T")

_JSON = {"Content-Type": "application/json"}
_PROBES = ("/healthz", "/readyz", "/metrics")
_STATUS = {
    200: "200 OK",
    202: "202 Accepted",
    204: "204 No Content",
    400: "400 Bad Request",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    413: "413 Payload Too Large",
    415: "415 Unsupported Media Type",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}


def _off_the_event_loop(model: Any) -> None:
    """Under gevent (inference servers), load the model in a native thread first.

    Loading is CPU work that never yields: run on the event loop it would stall
    ``/healthz`` and ``/readyz`` (and gunicorn's heartbeat) until done. gevent's thread pool
    runs it beside the loop (bootstrapping an empty store first); ``model.start()`` then
    finds the version loaded and only starts its poller on the loop.
    """
    import sys

    monkey = sys.modules.get("gevent.monkey")
    load_now = getattr(model, "load_now", None)
    if monkey is None or not monkey.is_module_patched("threading") or not callable(load_now):
        return
    from gevent import get_hub

    from runtime.errors import ModelNotFoundError

    with contextlib.suppress(ModelNotFoundError):  # start() raises it again, with the reason
        get_hub().threadpool.apply(load_now)


@dataclass(frozen=True)
class Request:
    """A protocol-neutral request: header names are lower-case."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


ModelOpener = Callable[[Function, RuntimeSettings], ModelSource | None]


def _store_check(function: Function, settings: RuntimeSettings) -> Callable[[], None] | None:
    """A retrain function needs its database for every event: readiness checks it."""
    if function.spec.retrain is None or not settings.models.database_url:
        return None

    def check() -> None:
        from runtime.stores import open_stores

        open_stores(settings).check()

    return check


def _open_model(function: Function, settings: RuntimeSettings) -> ModelSource | None:
    if function.spec.model is None:
        return None
    from runtime.models import open_model  # heavy (scikit-learn): loaded in the background

    handle: ModelSource = open_model(function.spec.model, settings)
    return handle


class App:
    """One function behind HTTP. Build it with :func:`create_app`."""

    def __init__(
        self,
        function: Function,
        settings: RuntimeSettings,
        *,
        model_opener: ModelOpener = _open_model,
        emitters: EmitterFactory | None = None,
        started_at: float | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        self.function = function
        self.spec = function.spec
        self.settings = settings
        self.metrics = Metrics(function.name, started_at, revision=settings.server.revision)
        if function.spec.retrain is not None:  # training progress on the same /metrics
            from runtime.retraining.progress import expose

            expose(self.metrics.registry)
        self.metrics.phase("imports_done")
        self.dispatcher = Dispatcher(function, settings, self.metrics, emitters=emitters)
        # one of several worker processes: the limit, readiness and swaps are the fleet's
        self.fleet = fleet
        limit = function.spec.scaling.container_concurrency
        server = settings.server
        self.limiter: ConcurrencyLimiter | SharedLimiter = (
            ConcurrencyLimiter(limit, server.queue_depth, server.queue_timeout_seconds)
            if fleet is None
            else fleet.limiter(limit, server.queue_depth, server.queue_timeout_seconds)
        )
        self._watcher: threading.Thread | None = None
        self.shed_report = ShedReport(self.metrics.count_shed, log)
        self._rest = cooperative_sleep()  # shed answers rest their connection (gevent only)
        self.metrics.queued.set_function(lambda: self.limiter.waiting)
        self.metrics.resting.set_function(lambda: self.limiter.pacer.resting)
        self.load_error: str | None = None
        self.waiting_on: str | None = None
        self._closing = threading.Event()
        self._store_check = _store_check(function, settings)
        self._store_checked_at = -1e9
        self._store_problem_text: str | None = None
        self._ready = threading.Event()
        self._opener = model_opener
        self._loader: threading.Thread | None = None
        self._flask: Any = None
        if self.spec.kind == "http":
            from runtime.server.plain import flask_app

            self._flask = flask_app(function, settings.server.max_body_bytes)
        self._alias = f"/{function.name}"
        self._model_names = frozenset(
            {function.spec.name} | ({function.spec.model.name} if function.spec.model else set())
        )
        self._closers: list[Callable[[], None]] = []
        self._openapi: bytes | None = None
        # the inference routes clients call most, matched before the general parse
        self._infer_paths = frozenset(f"/v2/models/{n}/infer" for n in self._model_names)

    # --- lifecycle --------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """This worker loaded its model, and so did every other worker of the server."""
        return self._ready.is_set() and (self.fleet is None or self.fleet.all_ready())

    def start(self) -> App:
        """Load the model in a background thread; ``/readyz`` turns 200 when done."""
        if self._loader is None:
            self._loader = threading.Thread(target=self._load, name="mlfn-loader", daemon=True)
            self._loader.start()
        return self

    def wait_ready(self, timeout: float) -> bool:
        """Block until ready (True) or until loading failed or timed out (False)."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.load_error is not None or time.monotonic() > deadline:
                return False
        return True

    def on_close(self, closer: Callable[[], None]) -> None:
        """Call ``closer`` (another protocol's server, say) when the app closes."""
        self._closers.append(closer)

    def close(self) -> None:
        self._closing.set()
        for closer in self._closers:
            closer()
        model = self.dispatcher.model
        if model is not None:
            model.stop()

    def _show_version(self, loaded: Any) -> None:
        version = getattr(loaded, "version", None)
        if isinstance(version, int) and not isinstance(version, bool):
            self.metrics.show_model(loaded.name, version, getattr(loaded, "metadata", None) or {})

    def _load(self) -> None:
        try:
            model = self._opener(self.function, self.settings)
            if model is not None:
                # the served version on /metrics from the first load, not the first request
                # (mlfn status reads it; a new version shows before any traffic reaches it)
                on_swap = getattr(model, "on_swap", None)
                if callable(on_swap):
                    on_swap(self._show_version)
                self._start_model(model)
                self._show_version(model.current())
                self.dispatcher.model = model
                self.metrics.phase("model_loaded")
        except Exception as err:
            self.load_error = f"loading the model failed: {type(err).__name__}: {err}"
            log.exception("model load failed for %s", self.spec.name)
            return
        if self.fleet is not None:
            self.fleet.set_ready()
            if callable(getattr(self.dispatcher.model, "refresh", None)):
                self._watcher = threading.Thread(
                    target=self._watch_swaps, name="mlfn-fleet-watch", daemon=True
                )
                self._watcher.start()
        self._ready.set()
        seconds = self.metrics.phase("ready")
        log.info("%s ready %.3fs after process start", self.spec.name, seconds)

    def _start_model(self, model: ModelSource) -> None:
        """Start the model; while its store is unreachable, say so on /readyz and retry."""
        delay = 0.5
        while True:
            try:
                _off_the_event_loop(model)
                model.start()
                self.waiting_on = None
                return
            except StoreUnavailableError as err:
                if self.waiting_on is None:
                    log.warning("model store unavailable; retrying: %s", err)
                self.waiting_on = f"waiting for the model store: {err}"
                if self._closing.wait(delay):
                    raise
                delay = min(delay * 2, 5.0)

    def _store_problem(self) -> str | None:
        """Why the stores behind a retrain function are unusable now (checked at most 1/s)."""
        if self._store_check is None:
            return None
        now = time.monotonic()
        if now - self._store_checked_at >= 1.0:
            self._store_checked_at = now
            try:
                self._store_check()
                self._store_problem_text = None
            except StoreUnavailableError as err:
                self._store_problem_text = str(err)
        return self._store_problem_text

    def _watch_swaps(self) -> None:
        """Another worker was told of a new model version: check the store here too."""
        assert self.fleet is not None
        seen = self.fleet.generation
        while not self._closing.wait(WATCH_SECONDS):
            now = self.fleet.generation
            if now == seen:
                continue
            seen = now
            try:
                self.dispatcher.model.refresh()  # type: ignore[union-attr]
            except Exception as err:  # keep serving the loaded version; the poller retries
                log.warning("model refresh after a swap in another worker failed: %s", err)

    # --- entry points -----------------------------------------------------------------

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """WSGI entry: shed at once when full; else read the bounded body, then the same
        path as :meth:`handle`."""
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO") or "/"
        if self.limiter.full and self._limited(method, path):
            # before the body, the headers and any routing: a shed request costs little
            resp = self.shed_response(environ.get("HTTP_X_REQUEST_ID"))
            return self._respond(resp, start_response)
        headers = {
            k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")
        }
        if "CONTENT_TYPE" in environ:
            headers["content-type"] = environ["CONTENT_TYPE"]
        if self._flask is not None and path not in _PROBES:
            return self._plain(environ, start_response, headers)
        try:
            body = self._read_body(environ)
        except e.HttpError as err:
            resp = self._error(err, headers.get("x-request-id") or e.new_request_id())
            self.metrics.observe(resp.status, 0.0)
        else:
            resp = self.handle(Request(method, path, headers, body))
        return self._respond(resp, start_response)

    def _respond(self, resp: Response, start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers_out = list(resp.headers.items())
        headers_out.append(("Content-Length", str(len(resp.body))))
        start_response(_STATUS.get(resp.status) or f"{resp.status} Status", headers_out)
        rest = self.rest_for(resp)
        return [resp.body] if rest is None else Paused(resp.body, rest)

    def rest_for(self, resp: Response) -> Callable[[], None] | None:
        """How the connection that carried ``resp`` rests once it is sent, or None.

        A shed answer's connection is not read again for as long as its ``Retry-After``
        says, cooperatively (gevent only; see :mod:`runtime.server.limits`), so clients
        that ignore it cannot take the event loop from the requests already admitted.
        """
        sleep = self._rest
        if sleep is None or resp.status != 503 or "Retry-After" not in resp.headers:
            return None
        seconds = float(resp.headers["Retry-After"])
        return lambda: self.limiter.rest(seconds, sleep)

    def sheds(self, method: str) -> bool:
        """Whether a request with this method is shed now, from a lock-free look at the
        limiter (the lean worker asks once the head is parsed, before the body).

        Only for the gevent worker's functions (inference and event: every ``POST`` goes
        through the limit). A request that passes may still be shed when it asks for its
        slot; one shed here would have found every slot and queue place taken a moment
        ago.
        """
        return method == "POST" and self._flask is None and self.limiter.full

    def shed_response(self, request_id: str | None = None) -> Response:
        """The 503 of a request shed before routing: counted, logged once per interval."""
        started = time.perf_counter()
        rid = request_id or e.new_request_id()
        resp = self._shed(self.limiter.overloaded(), rid)
        resp.headers["X-Request-Id"] = rid
        self.metrics.observe(resp.status, time.perf_counter() - started)
        return resp

    def _limited(self, method: str, path: str) -> bool:
        """Whether a request goes through the concurrency limit (probes never do)."""
        if self._flask is not None:
            return path not in _PROBES
        return method == "POST"

    def handle(self, req: Request) -> Response:
        """Answer one request in-process: routing, limits, errors, metrics, logs."""
        started = time.perf_counter()
        rid = req.headers.get("x-request-id") or req.headers.get("ce-id") or e.new_request_id()
        metrics = self.metrics
        metrics.in_flight.inc()
        with request_context(rid):
            try:
                status, headers, body = self._route(req)
                resp = Response(status, headers, body)
            except e.Overloaded as err:
                resp = self._shed(err, rid)
            except e.HttpError as err:
                resp = self._error(err, rid)
            except StoreUnavailableError as err:  # transient: 503, the sender retries
                resp = self._error(e.NotReady(str(err), headers={"Retry-After": "2"}), rid)
            except Exception as err:
                resp = self._crash(err)
            finally:
                metrics.in_flight.dec()
        resp.headers["X-Request-Id"] = rid
        metrics.observe(resp.status, time.perf_counter() - started)
        return resp

    def _read_body(self, environ: Mapping[str, Any]) -> bytes:
        limit = self.settings.server.max_body_bytes
        n = _content_length(environ.get("CONTENT_LENGTH"))
        stream = environ["wsgi.input"]
        if n is not None:
            if n > limit:
                raise e.PayloadTooLarge(self._too_large(n))
            return bytes(stream.read(n)) if n else b""
        if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return b""  # no Content-Length and not chunked: no body
        data = bytes(stream.read(limit + 1))
        if len(data) > limit:
            raise e.PayloadTooLarge(self._too_large(None))
        return data

    def _too_large(self, n: int | None) -> str:
        size = f"{n} bytes" if n is not None else "the body"
        return (
            f"{size} is over the limit of {self.settings.server.max_body_bytes} bytes; "
            "send smaller requests or raise MLFN_MAX_BODY_BYTES"
        )

    def error_response(self, err: e.HttpError) -> Response:
        """The answer to a request refused before routing (it did not parse, or is too
        large), counted in the metrics like any other."""
        resp = self._error(err, e.new_request_id())
        self.metrics.observe(resp.status, 0.0)
        return resp

    def crash_response(self, err: BaseException) -> Response:
        """The 500 for a failure outside the function (logged with an error id)."""
        return self._crash(err)

    def _shed(self, err: e.Overloaded, error_id: str) -> Response:
        """A 503 that is counted, and logged only once per interval (not per request)."""
        self.shed_report.shed(err)
        return Response(*e.render(err, error_id))

    def _error(self, err: e.HttpError, error_id: str) -> Response:
        level = logging.WARNING if err.status >= 500 else logging.INFO
        log.log(level, "%s %s", err.status, err.message, extra={"error_id": error_id})
        return Response(*e.render(err, error_id))

    def _crash(self, err: BaseException) -> Response:
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
        message = (
            f"{self.spec.name} failed with {type(err).__name__}; the traceback is in the "
            f"server log under error id {error_id}"
        )
        return Response(*e.render(e.InternalError(message), error_id))

    def _plain(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        headers: Mapping[str, str],
    ) -> Iterable[bytes]:
        rid = headers.get("x-request-id") or e.new_request_id()
        started = time.perf_counter()
        status = 500
        captured: list[Any] = []

        def capture(status_line: str, hdrs: list[tuple[str, str]], exc: Any = None) -> Any:
            captured[:] = [status_line, [*hdrs, ("X-Request-Id", rid)]]
            return lambda data: None

        self.metrics.in_flight.inc()
        with request_context(rid):
            try:
                length = _content_length(environ.get("CONTENT_LENGTH"))
                if length is not None and length > self.settings.server.max_body_bytes:
                    raise e.PayloadTooLarge(self._too_large(length))
                with self.limiter.slot():
                    body = b"".join(self._flask(environ, capture))
                status = int(captured[0].split(" ", 1)[0])
                start_response(*captured)
                return [body]
            except e.Overloaded as err:
                resp = self._shed(err, rid)
                status = resp.status
            except e.HttpError as err:
                resp = self._error(err, rid)
                status = resp.status
            except Exception as err:
                resp = self._crash(err)
            finally:
                self.metrics.in_flight.dec()
                self.metrics.observe(status, time.perf_counter() - started)
        start_response(
            _STATUS[resp.status],
            [*resp.headers.items(), ("X-Request-Id", rid), ("Content-Length", str(len(resp.body)))],
        )
        return [resp.body]

    # --- routing ----------------------------------------------------------------------

    def _route(self, req: Request) -> tuple[int, dict[str, str], bytes]:
        path = req.path
        if path == "/healthz":
            _allow(req, "GET")
            return 200, dict(_JSON), b'{"status":"ok"}'
        if path == "/readyz":
            _allow(req, "GET")
            return self._readiness()
        if path == "/metrics":
            _allow(req, "GET")
            return 200, {"Content-Type": CONTENT_TYPE}, self.metrics.render()
        kind = self.spec.kind
        if path in ("/openapi.json", "/docs") and (kind == "inference" or self.spec.is_event):
            _allow(req, "GET")
            return self._docs(path)
        ctype = req.headers.get("content-type", "")
        d = self.dispatcher
        if kind == "inference":
            if path == "/" or path == self._alias:
                _allow(req, "POST")
                if "ce-specversion" in req.headers or ctype.startswith("application/cloudevents"):
                    return self._run(req, lambda: self._model_event(req))
                return self._run(req, lambda: (200, dict(_JSON), d.json_route(req.body, ctype)))
            if path == "/v2" or path.startswith("/v2/"):
                return self._oip(req, path, ctype)
        elif self.spec.is_event and path == "/":
            _allow(req, "POST")
            return self._run(req, lambda: self._events(req))
        if self._flask is not None:  # in-process call of a plain HTTP function
            return self._plain_in_process(req)
        raise e.NotFound(f"no route {path}; {self.spec.name} ({kind}) serves: {self._routes()}")

    def _docs(self, path: str) -> tuple[int, dict[str, str], bytes]:
        from runtime.server import openapi

        if path == "/docs":
            return 200, {"Content-Type": "text/html; charset=utf-8"}, openapi.DOCS_HTML
        if self._openapi is None:
            self._openapi = openapi.document_json(self.function)
        return 200, dict(_JSON), self._openapi

    def _model_event(self, req: Request) -> tuple[int, dict[str, str], bytes]:
        reply = _reply(self.dispatcher.model_event(req.headers, req.body))
        if self.fleet is not None:
            self.fleet.announce_swap()  # the other workers check the store too
        return reply

    def _routes(self) -> str:
        base = ["GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json", "GET /docs"]
        if self.spec.kind == "inference":
            base += [f"POST / (or {self._alias})", "the Open Inference Protocol under /v2"]
        elif self.spec.is_event:
            base += ["POST / (CloudEvents)"]
        return ", ".join(base)

    def _readiness(self) -> tuple[int, dict[str, str], bytes]:
        problem = self._store_problem() if self.ready else None
        if self.ready and problem is None:
            return 200, dict(_JSON), b'{"status":"ready"}'
        if self.load_error is not None:  # final: a platform stops waiting for this instance
            return (
                503,
                dict(_JSON),
                json.dumps({"status": "failed", "reason": self.load_error}).encode(),
            )
        reason = problem or self.waiting_on or "loading the function's model"
        if reason == "loading the function's model" and self._ready.is_set() and self.fleet:
            reason = (
                f"{self.fleet.ready_count()} of {self.fleet.workers} worker processes "
                "have loaded the function's model"
            )
        return 503, dict(_JSON), json.dumps({"status": "not ready", "reason": reason}).encode()

    def _run(
        self, req: Request, call: Callable[[], tuple[int, dict[str, str], bytes]]
    ) -> tuple[int, dict[str, str], bytes]:
        """Every HTTP route that reaches the function (see :meth:`guarded`)."""
        return self.guarded(call, body=_json_part(req))

    def guarded(self, call: Callable[[], T], *, body: bytes | None = None) -> T:
        """``call()`` once the model is ready, within the concurrency limit (every protocol).

        A JSON ``body``'s nesting is checked after admission, so a shed request costs no
        scan, and before the call, so nothing too deep reaches the function.
        """
        if not self._ready.is_set():
            raise e.NotReady(
                self.load_error or f"{self.spec.name} is still loading its model; retry shortly",
                headers={"Retry-After": "1"},
            )
        with self.limiter.slot():
            if body is not None:
                check_depth(body, self.settings.server.max_json_depth)
            return call()

    def _events(self, req: Request) -> tuple[int, dict[str, str], bytes]:
        def each(event: Any) -> list[Any]:
            with request_context(str(event["id"])):
                log.debug("event %s of type %s", event["id"], event["type"])
                return self.dispatcher.call_event(event)

        return _reply(self.dispatcher.events_route(req.headers, req.body, each))

    def _oip(self, req: Request, path: str, ctype: str) -> tuple[int, dict[str, str], bytes]:
        d = self.dispatcher
        if path in self._infer_paths and req.method == "POST":
            return self._run(req, lambda: (200, *d.oip_infer(req.body, req.headers)))
        parts = path.strip("/").split("/")
        if parts == ["v2"]:
            _allow(req, "GET")
            return _json({"name": "mlfn", "version": "2", "extensions": ["binary_tensor_data"]})
        if parts == ["v2", "health", "live"]:
            _allow(req, "GET")
            return _json({"live": True})
        if parts == ["v2", "health", "ready"]:
            _allow(req, "GET")
            return _json({"ready": self.ready}, 200 if self.ready else 503)
        if len(parts) >= 3 and parts[1] == "models":
            self.check_model_name(parts[2])
            rest = parts[3:]
            version = None
            if len(rest) >= 2 and rest[0] == "versions":
                version, rest = rest[1], rest[2:]
            if rest == []:
                _allow(req, "GET")
                return _json(d.oip_metadata())
            if rest == ["ready"]:
                _allow(req, "GET")
                return _json(
                    {"name": self.spec.name, "ready": self.ready}, 200 if self.ready else 503
                )
            if rest == ["infer"]:
                _allow(req, "POST")
                return self._run(req, lambda: (200, *d.oip_infer(req.body, req.headers, version)))
        raise e.NotFound(f"no Open Inference Protocol route {path}")

    def check_model_name(self, name: str) -> None:
        """A 404 unless ``name`` is this function's (or its model's) name."""
        names = self._model_names
        if name not in names:
            raise e.NotFound(f"no model {name!r} here; this server serves {self.spec.name!r}")

    def _plain_in_process(self, req: Request) -> tuple[int, dict[str, str], bytes]:
        client = self._flask.test_client()
        with self.limiter.slot():
            r = client.open(req.path, method=req.method, headers=dict(req.headers), data=req.body)
        return r.status_code, dict(r.headers), r.get_data()


def _content_length(value: str | None) -> int | None:
    """The declared body size; None when there is none."""
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise e.BadRequest(f"Content-Length {value!r} is not a number of bytes")
    return n


def _allow(req: Request, method: str) -> None:
    if req.method != method and not (method == "GET" and req.method == "HEAD"):
        raise e.MethodNotAllowed(req.method, req.path, (method,))


def _reply(r: EventReply) -> tuple[int, dict[str, str], bytes]:
    return r.status, r.headers, r.body


def _json_part(req: Request) -> bytes:
    """The JSON of a request body: all of it, or the header of an OIP binary request."""
    n = req.headers.get(BINARY_HEADER)
    if n is not None and n.isdigit() and 0 < int(n) <= len(req.body):
        return req.body[: int(n)]
    return req.body


def _json(obj: Any, status: int = 200) -> tuple[int, dict[str, str], bytes]:
    return status, dict(_JSON), json.dumps(obj).encode()


def create_app(
    function: Function,
    settings: RuntimeSettings,
    *,
    model_opener: ModelOpener = _open_model,
    emitters: EmitterFactory | None = None,
    start: bool = True,
    started_at: float | None = None,
    fleet: Fleet | None = None,
) -> App:
    """The WSGI app of ``function``; with ``start`` the model starts loading now.

    ``started_at`` (wall-clock seconds) is when the serving process started, for the
    cold-start metrics; default: this process's start. ``fleet``: the table shared with
    the other worker processes of the server (see :mod:`runtime.server.fleet`), joined
    by this process; None for a single process.

    Callable in-process (tests, ``mlfn invoke``, a forked instance of the local platform).

    Example:
        >>> from runtime.registry import discover
        >>> from runtime.settings import RuntimeSettings
        >>> app = create_app(discover("functions").get("predict"), RuntimeSettings())  # doctest: +SKIP
        >>> app.wait_ready(30)  # doctest: +SKIP
        True
    """
    app = App(
        function,
        settings,
        model_opener=model_opener,
        emitters=emitters,
        started_at=started_at,
        fleet=fleet,
    )
    return app.start() if start else app
