"""Local platform benchmark: cold start, gateway overhead, scale-out (`mlfn dev`).

One table:

* cold start of ``predict`` from zero to its first response (p50 over
  ``MLFN_BENCH_COLD_RUNS`` runs, default 5; target <= 1 s on 2 cores), with the phases
  the platform measured (spawn, imports, model load, ready);
* the gateway's overhead against calling the instance directly: p50 added at
  concurrency 1 (target <= 1 ms) and throughput lost at concurrency 64 (target <= 15 %);
* scale-out after a step from 1 to 64 concurrent clients: seconds until the number of
  ready instances stops changing, and that number.

Each load cell runs ``MLFN_BENCH_SECONDS`` (default 3) with :mod:`bench._load`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median
from typing import Any

from bench._load import LoadResult, build_request, run_load

REPO = Path(__file__).resolve().parent.parent
SECONDS = float(os.environ.get("MLFN_BENCH_SECONDS", "3"))
COLD_RUNS = int(os.environ.get("MLFN_BENCH_COLD_RUNS", "5"))
READY = re.compile(r"mlfn dev ready: gateway http://127\.0\.0\.1:(\d+)")


class Dev:
    """A running ``mlfn dev`` for the benchmark."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    def status(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/_mlfn/status"
        with urllib.request.urlopen(url, timeout=10) as resp:
            result: dict[str, Any] = json.loads(resp.read())
        return result

    def revision(self, function: str = "predict") -> dict[str, Any]:
        rev: dict[str, Any] = self.status()["functions"][function]["revisions"][-1]
        return rev

    def ready_ports(self, function: str = "predict") -> list[int]:
        return [i["port"] for i in self.revision(function)["instances"] if i["state"] == "ready"]

    def wait(self, cond: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = cond()
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"benchmark: timed out waiting for {what}; see {self.log}")


@contextmanager
def dev(**settings: str) -> Iterator[Dev]:
    """``mlfn dev --port 0 --no-eventing`` with the example functions and ``settings``."""
    tmp = Path(tempfile.mkdtemp(prefix="mlfn-bench-platform-"))
    log = tmp / "dev.log"
    env = {
        **os.environ,
        "MLFN_HOME": str(tmp / "home"),
        "MLFN_LOG_FORMAT": "text",
        "MLFN_LOG_LEVEL": "WARNING",
        "MLFN_PLATFORM_WATCH_SECONDS": "0",
        **settings,
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from mlfn.cli import main; main()",
                "dev",
                "--port",
                "0",
                "--no-eventing",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        port = 0
        while not port:
            match = READY.search(log.read_text(errors="replace"))
            if match:
                port = int(match.group(1))
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlfn dev did not start:\n{log.read_text()[-3000:]}")
            else:
                time.sleep(0.05)
        yield Dev(proc, port, log)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _body() -> bytes:
    from functions._digits import digits

    X, _ = digits()
    return json.dumps({"instances": [[round(float(v), 4) for v in X[0]]]}).encode()


def _post(port: int, path: str, body: bytes) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()
        return int(resp.status)


def cold_starts(body: bytes) -> tuple[list[float], list[dict[str, float]]]:
    """Scale ``predict`` to zero, then time its first response, ``COLD_RUNS`` times."""
    totals: list[float] = []
    phases: list[dict[str, float]] = []
    with dev(
        MLFN_PLATFORM_STABLE_WINDOW_SECONDS="1",
        MLFN_PLATFORM_SCALE_TO_ZERO_GRACE_SECONDS="0",
        MLFN_PLATFORM_TICK_SECONDS="0.1",
    ) as d:
        for _ in range(COLD_RUNS):
            d.wait(lambda: not d.revision()["instances"], 60, "predict to scale to zero")
            started = time.perf_counter()
            assert _post(d.port, "/predict/", body) == 200
            totals.append(time.perf_counter() - started)
            phases.append(d.revision()["cold_starts"][0]["phases_s"])
    return totals, phases


def overhead_and_scale_out(body: bytes) -> dict[str, Any]:
    """Direct vs gateway at concurrency 1 and 64, then a 1 -> 64 client step."""
    out: dict[str, Any] = {}
    with dev(MLFN_PLATFORM_STABLE_WINDOW_SECONDS="60", MLFN_PLATFORM_TICK_SECONDS="0.5") as d:
        _post(d.port, "/predict/", body)
        d.wait(lambda: len(d.ready_ports()) == 1, 60, "one ready predict instance")
        direct_port = d.ready_ports()[0]
        gw = build_request("127.0.0.1", d.port, "POST", "/predict/", body)
        direct = build_request("127.0.0.1", direct_port, "POST", "/", body)
        for c in (1, 64):
            out[f"gateway c{c}"] = run_load(
                "127.0.0.1", d.port, gw, concurrency=c, duration=SECONDS
            )
            out[f"direct c{c}"] = run_load(
                "127.0.0.1", direct_port, direct, concurrency=c, duration=SECONDS
            )
    with dev(MLFN_PLATFORM_STABLE_WINDOW_SECONDS="6", MLFN_PLATFORM_TICK_SECONDS="0.5") as d:
        _post(d.port, "/predict/", body)
        gw = build_request("127.0.0.1", d.port, "POST", "/predict/", body)
        run_load("127.0.0.1", d.port, gw, concurrency=1, duration=2.0, warmup=0.0)
        samples: list[tuple[float, int]] = []
        step = time.perf_counter()
        load = threading.Thread(
            target=run_load,
            args=("127.0.0.1", d.port, gw),
            kwargs={"concurrency": 64, "duration": 12.0, "warmup": 0.0},
        )
        load.start()
        while load.is_alive():
            samples.append((time.perf_counter() - step, len(d.ready_ports())))
            time.sleep(0.1)
        load.join()
        final = samples[-1][1]
        changes = [t for (t, n), (_, prev) in zip(samples[1:], samples, strict=False) if n != prev]
        out["scale_out"] = (changes[-1] if changes else 0.0, samples[0][1], final)
    return out


def _row(name: str, value: str, target: str, ok: bool | None) -> str:
    verdict = "" if ok is None else ("ok" if ok else "MISSED")
    return f"| {name:<46} | {value:>22} | {target:>10} | {verdict:>6} |"


def main() -> None:
    body = _body()
    totals, phases = cold_starts(body)
    p50 = median(totals)
    phase_p50 = {k: median(p.get(k, 0.0) for p in phases) for k in phases[0]}
    loads = overhead_and_scale_out(body)
    g1: LoadResult = loads["gateway c1"]
    d1: LoadResult = loads["direct c1"]
    g64: LoadResult = loads["gateway c64"]
    d64: LoadResult = loads["direct c64"]
    added = g1.p50_ms - d1.p50_ms
    loss = 1.0 - g64.rps / d64.rps if d64.rps else float("nan")
    settle, start_n, end_n = loads["scale_out"]
    print(_row("measure", "value", "target", None))
    print(f"|{'-' * 48}|{'-' * 24}|{'-' * 12}|{'-' * 8}|")
    print(
        _row(
            f"cold start predict, p50 of {len(totals)}",
            f"{p50 * 1000:.0f} ms",
            "<= 1000 ms",
            p50 <= 1.0,
        )
    )
    for k, v in phase_p50.items():
        print(_row(f"  phase {k} (p50)", f"{v * 1000:.0f} ms", "", None))
    print(_row("direct p50 at c=1", f"{d1.p50_ms:.2f} ms", "", None))
    print(_row("gateway p50 at c=1", f"{g1.p50_ms:.2f} ms", "", None))
    print(_row("gateway p50 added at c=1", f"{added:.2f} ms", "<= 1 ms", added <= 1.0))
    print(_row("direct req/s at c=64", f"{d64.rps:.0f}", "", None))
    print(_row("gateway req/s at c=64", f"{g64.rps:.0f}", "", None))
    print(_row("gateway throughput loss at c=64", f"{loss * 100:.1f} %", "<= 15 %", loss <= 0.15))
    print(_row("scale-out 1 -> 64 clients: settled after", f"{settle:.1f} s", "", None))
    print(_row("  instances before -> after", f"{start_n} -> {end_n}", "", None))
    errors = g1.errors + d1.errors + g64.errors + d64.errors
    if errors:
        print(f"(load errors: {errors})")


if __name__ == "__main__":
    main()
