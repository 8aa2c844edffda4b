"""A cheap HTTP/1.1 load generator: asyncio, raw sockets, keep-alive connections.

Closed loop: ``concurrency`` connections each send a request, read the whole response
(``Content-Length`` framing), and send the next. Cheap enough to share two cores with the
server it measures. Other benchmarks import :func:`run_load` and :func:`build_request`.

Example:
    >>> req = build_request("127.0.0.1", 8080, "POST", "/", b'{"x": 1}')  # doctest: +SKIP
    >>> run_load("127.0.0.1", 8080, req, concurrency=8, duration=3.0)  # doctest: +SKIP
    LoadResult(requests=..., rps=..., p50_ms=..., p99_ms=..., errors=0)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LoadResult", "build_request", "percentile", "run_load"]


@dataclass(frozen=True)
class LoadResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    statuses: dict[int, int]
    cpu_us: float | None = None
    """CPU per request of the server's processes, where the bench measured it."""

    @classmethod
    def of_latencies(
        cls,
        latencies: list[float],
        seconds: float,
        errors: int = 0,
        statuses: dict[int, int] | None = None,
    ) -> LoadResult:
        """From the latencies (seconds) of the successful requests of a run of ``seconds``."""
        ordered = sorted(latencies)
        n = len(ordered)
        return cls(
            requests=n,
            rps=n / seconds,
            p50_ms=percentile(ordered, 0.50) * 1000,
            p99_ms=percentile(ordered, 0.99) * 1000,
            errors=errors,
            statuses={200: n} if statuses is None else statuses,
        )


def build_request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> bytes:
    """The raw bytes of one keep-alive HTTP/1.1 request."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
    if body or method in ("POST", "PUT"):
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def start_server(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    stdout: Any = subprocess.DEVNULL,
    stderr: Any = None,
) -> subprocess.Popen[bytes]:
    """A server under test, started in a session of its own: :func:`stop_process` stops
    it with every process it starts."""
    return subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr, start_new_session=True
    )


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """SIGTERM ``proc`` (a server under test drains), SIGKILL it after ``grace_s``.

    A server started with ``start_new_session=True`` is stopped with every process of its
    group: a pre-fork server's workers would otherwise outlive a master that was killed
    (a functions-framework worker left running took CPU from the benchmarks after it).
    """
    group = _leads_group(proc)
    _signal(proc, signal.SIGTERM, group)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL, group)
        proc.wait()
    if group:
        _signal(proc, signal.SIGKILL, group)  # whatever of the group is left


def _leads_group(proc: subprocess.Popen[bytes]) -> bool:
    try:
        return os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return False


def _signal(proc: subprocess.Popen[bytes], sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
        if name.strip().lower() == b"transfer-encoding":
            raise ValueError("chunked responses are not supported by this load generator")
    return 0


async def _worker(
    host: str,
    port: int,
    request: bytes,
    warm_until: float,
    stop_at: float,
    latencies: list[float],
    statuses: dict[int, int],
) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    errors = 0
    clock = time.perf_counter
    try:
        while True:
            started = clock()
            if started >= stop_at:
                break
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = _content_length(head)
            if length:
                await reader.readexactly(length)
            status = int(head[9:12])
            if started >= warm_until:
                latencies.append(clock() - started)
                statuses[status] = statuses.get(status, 0) + 1
                if status >= 400:
                    errors += 1
    except (ConnectionError, asyncio.IncompleteReadError):
        errors += 1
    finally:
        writer.close()
    return errors


async def _run(
    host: str, port: int, request: bytes, concurrency: int, duration: float, warmup: float
) -> LoadResult:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    now = time.perf_counter()
    warm_until, stop_at = now + warmup, now + warmup + duration
    errors = await asyncio.gather(
        *(
            _worker(host, port, request, warm_until, stop_at, latencies, statuses)
            for _ in range(concurrency)
        )
    )
    return LoadResult.of_latencies(latencies, duration, sum(errors), statuses)


def run_load(
    host: str, port: int, request: bytes, *, concurrency: int, duration: float, warmup: float = 0.5
) -> LoadResult:
    """Drive ``concurrency`` keep-alive connections for ``warmup + duration`` seconds.

    Only requests started after the warm-up count; ``rps`` is over ``duration``.
    """
    return asyncio.run(_run(host, port, request, concurrency, duration, warmup))
