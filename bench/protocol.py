"""Protocol benchmark: `predict` over the JSON route, OIP REST (JSON, binary) and OIP gRPC.

One `mlfn serve predict --grpc-port` server; requests/s and p50/p99 latency at
concurrency 1 and 64, with 1-row and 64-row requests, for

* ``JSON route``: ``POST /`` with ``{"instances": [...]}`` (the reference),
* ``OIP REST JSON``: ``POST /v2/models/predict/infer`` with JSON tensors,
* ``OIP REST binary``: the same route, FP32 rows as raw bytes after the JSON header
  (``Inference-Header-Content-Length``) and binary outputs back, as tritonclient sends,
* ``OIP gRPC``: ``ModelInfer`` with ``raw_input_contents`` (8 HTTP/2 connections).

Load generators: at concurrency 1, one Python client for every route
(:mod:`bench._one_client`: prepared bytes on one socket, HTTP/1.1 or h2c), the routes
by turns in blocks of 20 requests, so that each sees the same machine and pays the same
client (h2load costs 30-40 us more CPU a call than wrk, which a c=1 gRPC row would
carry), against a server of one worker (with two, each route's connection lands on
either worker, and on a shared machine their cores carry different loads). At concurrency 64, wrk for HTTP and h2load (nghttp2) for gRPC when installed,
C clients that leave the cores to the server; else the asyncio HTTP generator and
grpcio's asyncio client (which costs about as much CPU per call as the server: on a
2-core machine it caps the gRPC rows). The header line says which ran; compare rows of
one run.

``cpu ms/req`` is the server's CPU time (all its processes, from /proc) per request
served, warm-up included at c=64; at c=1 the CPU used during each route's blocks (10 ms
ticks, averaged over many blocks): on a machine shared with other work it is the
steadier figure.

Targets: REST binary and gRPC at least as fast as the JSON route for 64-row requests,
and no slower for 1-row requests (within 5%: the noise of one run on a shared machine).
Each cell runs ``MLFN_BENCH_SECONDS`` (default 1.5) after a 0.5 s warm-up. At c=64 the
routes run by turns, five rounds (``MLFN_BENCH_ROUNDS``), and each cell shows its median
round: a moment of other work on a shared machine moves one round, not the comparison.
The whole run takes about three minutes.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench import _h2load, _one_client
from bench._load import LoadResult, start_server, stop_process
from bench._wrk import generator as http_generator
from bench._wrk import load as http_load
from bench.serving import REPO, _ready

CONCURRENCY = (1, 64)
ROWS = (1, 64)
ROUTES = ("JSON route", "OIP REST JSON", "OIP REST binary", "OIP gRPC")
GRPC_CHANNELS = _h2load.CONNECTIONS
ROUNDS = 5
"""Each c=64 cell runs this many times, the routes by turns; the table shows its median
(``MLFN_BENCH_ROUNDS``)."""
INFER = "/inference.GRPCInferenceService/ModelInfer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rows(n: int) -> np.ndarray:
    from functions._digits import digits

    X, _ = digits()
    return np.round(X[np.arange(n) % len(X)], 4).astype(np.float32)


def _http_request(route: str, x: np.ndarray) -> tuple[str, bytes, dict[str, str]]:
    """Path, body and headers of one request of ``route``."""
    json_type = {"Content-Type": "application/json"}
    if route == "JSON route":
        return "/", json.dumps({"instances": x.astype(float).tolist()}).encode(), json_type
    path = "/v2/models/predict/infer"
    if route == "OIP REST JSON":
        tensor = {"name": "instances", "shape": list(x.shape), "datatype": "FP64"}
        body = json.dumps({"inputs": [{**tensor, "data": x.astype(float).ravel().tolist()}]})
        return path, body.encode(), json_type
    raw = x.tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return (
        path,
        head + raw,
        {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(head)),
        },
    )


def _grpc_request(x: np.ndarray) -> Any:
    from runtime.server.grpc import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name="predict", raw_input_contents=[x.tobytes()])
    request.inputs.add(name="input-0", datatype="FP32", shape=list(x.shape))
    return request


def _grpc_check(target: str, request: Any) -> None:
    """One call with grpcio's client must succeed (h2load checks HTTP statuses only)."""
    import grpc

    from runtime.server.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    with grpc.insecure_channel(target) as channel:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)


def _grpc_cell(
    host: str, port: int, x: np.ndarray, concurrency: int, duration: float
) -> tuple[LoadResult, float]:
    """The result of one gRPC cell and the seconds it ran, warm-up included."""
    request = _grpc_request(x)
    if _h2load.available():
        _grpc_check(f"{host}:{port}", request)
        secs = max(1, round(duration))
        result = _h2load.load(
            host, port, INFER, request.SerializeToString(), concurrency=concurrency, duration=secs
        )
        assert result is not None
        return result, secs + 1.0
    result = asyncio.run(_grpc_load(f"{host}:{port}", x, concurrency, duration, 0.5))
    return result, duration + 0.5


async def _grpc_load(
    target: str, x: np.ndarray, concurrency: int, duration: float, warmup: float
) -> LoadResult:
    import grpc

    from runtime.server.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    request = _grpc_request(x)
    channels = [grpc.aio.insecure_channel(target) for _ in range(min(GRPC_CHANNELS, concurrency))]
    stubs = [pb_grpc.GRPCInferenceServiceStub(ch) for ch in channels]
    latencies: list[float] = []
    errors = 0
    clock = time.perf_counter
    now = clock()
    warm_until, stop_at = now + warmup, now + warmup + duration

    async def worker(i: int) -> None:
        nonlocal errors
        stub = stubs[i % len(stubs)]
        while (started := clock()) < stop_at:
            try:
                await stub.ModelInfer(request)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            if started >= warm_until:
                latencies.append(clock() - started)

    try:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        for ch in channels:
            await ch.close()
    return LoadResult.of_latencies(latencies, duration, errors)


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and every process below it, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo, seen = [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (OSError, IndexError, ValueError):
            continue
        todo.extend(int(c) for c in children)
    return total


@contextmanager
def _serving(argv: list[str], env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_server(argv, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 180
        while not _ready(port, "/readyz"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv} did not become ready (exit code {proc.poll()})")
            time.sleep(0.05)
        yield proc
    finally:
        stop_process(proc)


def _drained(port: int, timeout: float = 30.0) -> None:
    """Wait until the server has no request in flight (a slow cell's backlog would
    otherwise eat into the next cell's time)."""
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        busy = [
            line
            for line in text.splitlines()
            if line.startswith("mlfn_requests_in_flight{") and float(line.rsplit(" ", 1)[1]) > 1
        ]  # the /metrics request itself counts as one
        if not busy:
            return
        time.sleep(0.05)


def main() -> None:
    seconds = float(os.environ.get("MLFN_BENCH_SECONDS", "1.5"))
    rounds = max(1, int(os.environ.get("MLFN_BENCH_ROUNDS", str(ROUNDS))))
    results: list[tuple[str, int, int, LoadResult]] = []
    cpu_ms: dict[tuple[str, int, int], float] = {}
    with tempfile.TemporaryDirectory(prefix="mlfn-bench-") as home:
        env = {
            **os.environ,
            "MLFN_HOME": home,
            "MLFN_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(REPO),
        }
        # c=1 first, on a server of one worker: a lone request uses one worker, and with
        # two each route's connection would land on either, whose cores carry different
        # loads on a shared machine; then c=64 on the default workers (one per CPU)
        for workers, concurrency in (("1", CONCURRENCY[:1]), (None, CONCURRENCY[1:])):
            port, grpc_port = _free_port(), _free_port()
            argv = [
                sys.executable,
                "-c",
                "from mlfn.cli import main; main()",
                "serve",
                "predict",
                "--port",
                str(port),
                "--grpc-port",
                str(grpc_port),
            ]
            served_env = env if workers is None else {**env, "MLFN_WORKERS": workers}
            with _serving(argv, served_env, port) as proc:
                for rows in ROWS:
                    x = _rows(rows)
                    for c in concurrency:
                        if c == 1:  # one client for every route, routes by turns
                            for route, (result, cpu) in _one_by_turns(
                                port, grpc_port, x, seconds, lambda: _cpu_seconds(proc.pid)
                            ).items():
                                results.append((route, c, rows, result))
                                cpu_ms[(route, c, rows)] = cpu / max(result.requests, 1) * 1000
                            continue
                        # the routes by turns, ROUNDS times; each route's median round
                        runs: dict[str, list[tuple[LoadResult, float]]] = {r: [] for r in ROUTES}
                        for _ in range(rounds):
                            for route in ROUTES:
                                runs[route].append(
                                    _loaded_cell(route, port, grpc_port, x, c, seconds, proc.pid)
                                )
                        for route, cells in runs.items():
                            result, cpu = sorted(cells, key=lambda cell: cell[0].rps)[
                                len(cells) // 2
                            ]
                            results.append((route, c, rows, result))
                            cpu_ms[(route, c, rows)] = cpu
    order = {(r, c): i for i, (r, c) in enumerate((r, c) for r in ROWS for c in CONCURRENCY)}
    results.sort(key=lambda cell: (order[(cell[2], cell[1])], ROUTES.index(cell[0])))
    grpc_client = "h2load" if _h2load.available() else "grpcio (asyncio; install h2load)"
    print(
        "load generators: c=1 one Python client for every route, the routes by turns, "
        f"one worker (bench/_one_client.py); c={CONCURRENCY[-1]} HTTP {http_generator()}, "
        f"gRPC {grpc_client}, one worker per CPU"
    )
    print(_table(results, cpu_ms))
    print(_targets(results))


def _loaded_cell(
    route: str, port: int, grpc_port: int, x: np.ndarray, c: int, seconds: float, pid: int
) -> tuple[LoadResult, float]:
    """One closed-loop cell of ``route`` at concurrency ``c``: the result, and the server's
    CPU milliseconds per request served (the warm-up's too)."""
    cpu_before = _cpu_seconds(pid)
    if route == "OIP gRPC":
        result, ran = _grpc_cell("127.0.0.1", grpc_port, x, c, seconds)
    else:
        path, body, headers = _http_request(route, x)
        result = http_load(
            "127.0.0.1", port, "POST", path, body, headers, concurrency=c, duration=seconds
        )
        ran = _http_seconds(seconds)
    _drained(port)
    served = result.rps * ran  # warm-up too
    return result, (_cpu_seconds(pid) - cpu_before) / max(served, 1) * 1000


def _one_by_turns(
    port: int, grpc_port: int, x: np.ndarray, seconds: float, cpu: Callable[[], float]
) -> dict[str, tuple[LoadResult, float]]:
    """The c=1 cells of every route with one client, by turns (each route about
    ``seconds``): the result and the server CPU seconds of each."""
    calls: dict[str, _one_client.Call] = {}
    for route in ROUTES:
        if route == "OIP gRPC":
            message = _grpc_request(x).SerializeToString()
            _grpc_check(f"127.0.0.1:{grpc_port}", _grpc_request(x))
            calls[route] = _one_client.grpc_call("127.0.0.1", grpc_port, INFER, message)
        else:
            path, body, headers = _http_request(route, x)
            wire = _one_client.http_request_bytes("127.0.0.1", port, path, body, headers)
            calls[route] = _one_client.http_call("127.0.0.1", port, wire)
    return _one_client.interleaved(
        calls, duration=seconds * len(calls), warmup=0.5 * len(calls), cpu=cpu
    )


def _http_seconds(seconds: float) -> float:
    """How long an HTTP cell ran, warm-up included (wrk runs whole seconds)."""
    if http_generator() == "wrk":
        return max(1, round(seconds)) + 1.0
    return seconds + 0.5


def _table(
    results: list[tuple[str, int, int, LoadResult]], cpu_ms: dict[tuple[str, int, int], float]
) -> str:
    head = f"{'route':18} {'conc':>4} {'rows':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'vs JSON':>8} {'cpu ms/req':>10}"
    lines = [head, "-" * len(head)]
    cell = {(n, c, r): v for n, c, r, v in results}
    for name, c, rows, r in results:
        ratio = r.rps / max(cell[("JSON route", c, rows)].rps, 1e-9)
        lines.append(
            f"{name:18} {c:>4} {rows:>4} {r.rps:>8.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.errors:>6} {ratio:>7.2f}x {cpu_ms.get((name, c, rows), float('nan')):>10.2f}"
        )
    return "\n".join(lines)


def _targets(results: list[tuple[str, int, int, Any]]) -> str:
    cell = {(n, c, r): v for n, c, r, v in results}
    lines = []
    for route in ("OIP REST binary", "OIP gRPC"):
        for rows, floor in ((64, 1.0), (1, 0.95)):
            for c in CONCURRENCY:
                ours, ref = cell[(route, c, rows)].rps, cell[("JSON route", c, rows)].rps
                ratio = ours / max(ref, 1e-9)
                lines.append(
                    f"target: {route}, {rows}-row, c={c}: {ours:.0f} req/s vs JSON route "
                    f"{ref:.0f} ({ratio:.2f}x; at least {floor:.2f}x): "
                    f"{'met' if ratio >= floor else 'MISSED'}"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
