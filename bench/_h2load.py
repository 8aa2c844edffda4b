"""Closed-loop unary gRPC load with ``h2load`` (nghttp2, C) when installed.

h2load costs the server's cores much less than a Python gRPC client (grpcio's asyncio
client spends about as much CPU per call as the server it measures), which matters on a
small machine where both share the cores. It sends one prepared gRPC message over
HTTP/2 to a method path; ``concurrency`` calls are in flight over up to
:data:`CONNECTIONS` connections. It checks HTTP statuses, not ``grpc-status``: callers
check the call with a real client first. ``apt-get install
nghttp2-client`` installs it; without it, :func:`load` returns None.

Example:
    >>> load("127.0.0.1", 8081, "/inference.GRPCInferenceService/ModelInfer", b"...", concurrency=64, duration=2)  # doctest: +SKIP
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from bench._load import LoadResult

__all__ = ["CONNECTIONS", "available", "load"]

CONNECTIONS = 8
"""HTTP/2 connections at most (a client's channels); the calls share them evenly."""


def available() -> bool:
    return shutil.which("h2load") is not None


def load(
    host: str,
    port: int,
    path: str,
    message: bytes,
    *,
    concurrency: int,
    duration: float,
    warmup: float = 1.0,
) -> LoadResult | None:
    """``concurrency`` unary calls in flight for ``duration`` seconds (after ``warmup``)."""
    h2load = shutil.which("h2load")
    if h2load is None:
        return None
    connections = min(CONNECTIONS, concurrency)
    streams = max(1, concurrency // connections)
    secs = max(1, round(duration))
    with tempfile.TemporaryDirectory(prefix="mlfn-h2load-") as tmp:
        body = Path(tmp) / "body"
        body.write_bytes(struct.pack(">BI", 0, len(message)) + message)
        log = Path(tmp) / "log"
        run = subprocess.run(
            [
                h2load,
                f"-c{connections}",
                f"-m{streams}",
                f"-D{secs}",
                f"--warm-up-time={max(1, round(warmup))}",
                f"--log-file={log}",
                "-d",
                str(body),
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                f"http://{host}:{port}{path}",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=secs + warmup + 30,
        )
        rows = [line.split("\t") for line in log.read_text().splitlines() if line.count("\t") == 2]
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", run.stdout)
    if done is None:
        raise RuntimeError(f"cannot read h2load's output:\n{run.stdout}\n{run.stderr}")
    ok = [int(r[2]) / 1e6 for r in rows if r[1] == "200"]
    errors = int(done.group(1)) - int(done.group(2))
    return LoadResult.of_latencies(ok, secs, errors)
