"""In-process OIP overhead: one request's server-side cost per route, model stubbed out.

No HTTP and no batcher: each route's own decode -> validate -> (stub model) -> encode,
as :class:`runtime.server.dispatch.Dispatcher` and the gRPC service run it (for gRPC:
parse the message, the ``ModelInfer`` RPC, serialise the reply; the request ids and
metrics around every call are left out, as the HTTP server's are), for the
``predict`` function with a classifier that answers zeros at once. What is left is the
protocol's overhead, the part ``python -m bench protocol`` cannot separate from the
transport and the model.

Target: OIP REST binary and gRPC no dearer than the JSON route (``POST /``), 1 and 64
rows. ``MLFN_BENCH_SECONDS`` (default 1.5) per cell; the run takes well under a minute.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from bench.protocol import ROWS, _grpc_request, _http_request, _rows

ROUTES = ("JSON route", "OIP REST JSON", "OIP REST binary", "OIP gRPC")


class _Classifier:
    classes_ = np.arange(10)

    def predict(self, X: Any) -> Any:
        return np.zeros(len(X), dtype=np.int64)


class _Loaded:
    model = _Classifier()
    version = 1
    name = "digits"
    metadata: ClassVar[dict[str, Any]] = {}


class _Model:
    ready = True

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def current(self) -> Any:
        return _Loaded()


def calls(rows: int) -> dict[str, Callable[[], object]]:
    """One zero-argument call per route, each serving one ``rows``-row request."""
    from functions.predict import predict
    from runtime.function import function_of
    from runtime.server.dispatch import Dispatcher
    from runtime.server.grpc.service import InferenceService
    from runtime.server.metrics import Metrics
    from runtime.settings import RuntimeSettings

    found = function_of(predict)
    assert found is not None
    function = found
    settings = RuntimeSettings().updated(server={"batching": False})
    d = Dispatcher(function, settings, Metrics(function.name, None), _Model())

    class _App:  # what InferenceService needs of App, without limits or readiness
        spec = function.spec
        dispatcher = d
        ready = True
        metrics = Metrics(function.name, None)

        def check_model_name(self, name: str) -> None: ...
        def guarded(self, call: Callable[[], Any]) -> Any:
            return call()

    service = InferenceService(_App())  # type: ignore[arg-type]
    x = _rows(rows)
    out: dict[str, Callable[[], object]] = {}
    for route in ROUTES[:3]:
        _, body, headers = _http_request(route, x)
        lower = {k.lower(): v for k, v in headers.items()}
        out[route] = _json_call(d, body) if route == "JSON route" else _oip_call(d, body, lower)
    message = _grpc_request(x).SerializeToString()

    def grpc_call() -> object:  # the service's parse, RPC and serialise; not its ids and metrics
        return service._infer_message(message)

    out["OIP gRPC"] = grpc_call
    return out


def _json_call(d: Any, body: bytes) -> Callable[[], object]:
    return lambda: d.json_route(body, "application/json")


def _oip_call(d: Any, body: bytes, headers: dict[str, str]) -> Callable[[], object]:
    return lambda: d.oip_infer(body, headers)


def measure(call: Callable[[], object], seconds: float) -> float:
    """CPU microseconds per call (the best of seven rounds, each about ``seconds`` / 7)."""
    call()
    best = float("inf")
    for _ in range(7):
        n, start = 0, time.process_time()
        deadline = start + seconds / 7
        while True:
            for _ in range(50):
                call()
            n += 50
            now = time.process_time()
            if now >= deadline:
                break
        best = min(best, (now - start) / n * 1e6)
    return best


def main() -> None:
    seconds = float(os.environ.get("MLFN_BENCH_SECONDS", "1.5"))
    print("in-process, model stubbed, no HTTP, no batcher; CPU µs per request (best of 7)")
    print(f"{'route':<18}" + "".join(f"{f'{r} row(s)':>14}" for r in ROWS) + "   target")
    table = {r: {route: measure(c, seconds) for route, c in calls(r).items()} for r in ROWS}
    for route in ROUTES:
        cells = "".join(f"{table[r][route]:>14.1f}" for r in ROWS)
        ref = route == "JSON route"
        print(f"{route:<18}{cells}   {'(reference)' if ref else '<= JSON route'}")
    worst = {
        r: max(table[r]["OIP REST binary"], table[r]["OIP gRPC"]) / table[r]["JSON route"]
        for r in ROWS
    }
    met = all(v <= 1.0 for v in worst.values())
    ratios = ", ".join(f"{r} row(s) {v:.2f}x" for r, v in worst.items())
    print(f"binary and gRPC vs the JSON route: {ratios} -> {'met' if met else 'not met'}")


if __name__ == "__main__":
    main()
