"""Closed-loop load with ``wrk`` when it is installed, else with :mod:`bench._load`.

wrk (C, one thread here) costs the server's CPUs much less than the asyncio generator,
which matters on a small machine where both share the cores. Without wrk (``apt-get
install wrk``) the same call runs :func:`bench._load.run_load`, and :func:`generator`
says which one measured, for the table's header.

Example:
    >>> load("127.0.0.1", 8080, "POST", "/", b"{}", {"ce-id": "1"}, concurrency=8, duration=3)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench._load import LoadResult, build_request, run_load

__all__ = ["generator", "load", "tree_cpu_seconds"]

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def _wrk() -> str | None:
    if os.environ.get("MLFN_BENCH_LOADGEN", "") == "python":
        return None
    return shutil.which("wrk")


def generator() -> str:
    """``wrk`` or ``bench._load`` (set ``MLFN_BENCH_LOADGEN=python`` to force the latter)."""
    return "wrk" if _wrk() else "bench._load (asyncio; install wrk for a cheaper client)"


def _lua(method: str, body_file: Path, headers: dict[str, str]) -> str:
    lines = [
        f'wrk.method = "{method}"',
        f'local f = assert(io.open("{body_file}", "rb"))',
        "wrk.body = f:read('*all')",
        "f:close()",
    ]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def _parse(out: str, duration: float) -> LoadResult:
    rps_m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps_m is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    lat = {q: float(v) * _UNITS[u] for q, v, u in _LATENCY.findall(out)}
    rps = float(rps_m.group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    if sock:
        errors += sum(int(g) for g in sock.groups())
    n = round(rps * duration)
    return LoadResult(
        requests=n,
        rps=rps,
        p50_ms=lat.get("50", float("nan")),
        p99_ms=lat.get("99", float("nan")),
        errors=errors,
        statuses={},
    )


def load(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    concurrency: int,
    duration: float,
    warmup: float = 0.5,
) -> LoadResult:
    """``concurrency`` keep-alive connections for ``duration`` seconds (after a warm-up)."""
    wrk = _wrk()
    if wrk is None:
        ctype = headers.get("Content-Type", "application/json")
        rest = {k: v for k, v in headers.items() if k != "Content-Type"}
        request = build_request(host, port, method, path, body, rest, content_type=ctype)
        return run_load(
            host, port, request, concurrency=concurrency, duration=duration, warmup=warmup
        )
    with tempfile.TemporaryDirectory(prefix="mlfn-wrk-") as tmp:
        body_file = Path(tmp) / "body"
        body_file.write_bytes(body)
        script = Path(tmp) / "req.lua"
        script.write_text(_lua(method, body_file, headers))
        url = f"http://{host}:{port}{path}"
        base = [wrk, "-t1", f"-c{concurrency}", "-s", str(script), "--latency", url]
        if warmup > 0:
            subprocess.run(
                [*base[:-2], f"-d{max(1, round(warmup))}s", url],
                capture_output=True,
                check=False,
                timeout=warmup + 30,
            )
        secs = max(1, round(duration))
        run = subprocess.run(
            [*base[:-2], "--latency", f"-d{secs}s", url],
            capture_output=True,
            text=True,
            check=False,
            timeout=secs + 30,
        )
        return _parse(run.stdout, secs)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its living descendants.

    Beside requests/s, CPU per request is the figure that a machine shared with other
    work disturbs least. Linux only; 0.0 elsewhere.
    """
    proc = Path("/proc")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for d in proc.glob("[0-9]*"):
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(d.name)] = int(fields[1])
        times[int(d.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return sum(times.get(p, 0.0) for p in tree)
