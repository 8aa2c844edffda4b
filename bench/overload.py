"""Overload benchmark: `mlfn serve predict` at its limit and at ten times its limit.

``predict`` has containerConcurrency 100 and the default queue of 256. Three cells,
each a closed loop of keep-alive connections sending single-row requests, counted after
a warm-up:

* ``at the limit``: 100 connections (wrk, or :mod:`bench._load` when wrk is absent);
* ``10x, Retry-After ignored``: 1,000 connections that resend at once after a 503, as
  wrk does (the case that used to collapse: 27 successes in 5 s);
* ``10x, Retry-After honoured``: 1,000 connections of a client that waits as long as a
  503 says before its next request; its 503 latency is the cost of being shed.

Targets: goodput at 10x at least 80% of the goodput at the limit; every 503 carries
``Retry-After``; shed answers are fast: for a client that honours ``Retry-After``, the
p99 of a 503 is under the p50 of a request served at the limit (being turned away costs
less than being served); the log says so a few times, not once per request. Bounded to about
a minute (the model store is bootstrapped in a temporary home first).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench._load import build_request, percentile, run_load

REPO = Path(__file__).resolve().parent.parent
LIMIT = 100  # predict's containerConcurrency
WARMUP_S = {LIMIT: 2.0, 10 * LIMIT: 5.0}  # at 10x: until the first rests are over
MEASURE_S = 6.0
GOODPUT_TARGET = 0.80

_WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("MLFN_BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  ok, shed, other, retry_after, counting_from = 0, 0, 0, 0, tonumber(args[1])
end
function response(status, headers, body)
  if os.time() < counting_from then return end
  if status == 200 then ok = ok + 1
  elseif status == 503 then
    shed = shed + 1
    if headers["Retry-After"] then retry_after = retry_after + 1 end
  else other = other + 1 end
end
function done(summary, latency, requests)
  local o, s, x, r = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok"); s = s + t:get("shed"); x = x + t:get("other")
    r = r + t:get("retry_after")
  end
  io.write(string.format("MLFN ok=%d shed=%d other=%d retry_after=%d\n", o, s, x, r))
end
"""


@dataclass
class Cell:
    name: str
    connections: int
    seconds: float
    ok: int
    shed: int
    other: int
    retry_after: int  # 503s that carried Retry-After
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50/p99, by what

    @property
    def goodput(self) -> float:
        return self.ok / self.seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _body() -> bytes:
    from functions._digits import digits

    X, _ = digits()
    return json.dumps({"instances": [[round(float(v), 4) for v in X[0]]]}).encode()


def _ready(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/readyz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


@contextmanager
def _serve(home: str, log_path: Path) -> Iterator[int]:
    port = _free_port()
    env = {**os.environ, "MLFN_HOME": home, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", "from mlfn.cli import main; main()", "serve", "predict"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*argv, "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while not _ready(port):
            if proc.poll() is not None:
                raise RuntimeError(f"mlfn serve exited: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("mlfn serve predict not ready after 120 s")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wrk(port: int, connections: int, body_path: Path, script: Path, name: str) -> Cell:
    counting_from = math.ceil(time.time() + WARMUP_S[connections])
    duration = counting_from - time.time() + MEASURE_S
    argv = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{duration:.0f}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}/",
        "--",
        str(counting_from),
    ]
    started = time.time()
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=duration + 30,
        env={**os.environ, "MLFN_BENCH_BODY": str(body_path)},
        check=True,
    ).stdout
    seconds = started + round(duration) - counting_from
    m = re.search(r"MLFN ok=(\d+) shed=(\d+) other=(\d+) retry_after=(\d+)", out)
    if m is None:
        raise RuntimeError(f"wrk printed no counts:\n{out}")
    ok, shed, other, retry = (int(g) for g in m.groups())
    lat = {
        q: _ms(v, unit)
        for q, v, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    }
    return Cell(
        name,
        connections,
        seconds,
        ok,
        shed,
        other,
        retry,
        {"all p50": lat.get("50", math.nan), "all p99": lat.get("99", math.nan)},
    )


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _closed_loop(port: int, connections: int, body: bytes, name: str) -> Cell:
    """The fallback load generator (bench/_load.py) when wrk is absent."""
    request = build_request("127.0.0.1", port, "POST", "/", body)
    r = run_load(
        "127.0.0.1",
        port,
        request,
        concurrency=connections,
        duration=MEASURE_S,
        warmup=WARMUP_S[connections],
    )
    ok, shed = r.statuses.get(200, 0), r.statuses.get(503, 0)
    other = r.requests - ok - shed
    return Cell(
        name,
        connections,
        MEASURE_S,
        ok,
        shed,
        other,
        -1,
        {"all p50": r.p50_ms, "all p99": r.p99_ms},
    )


async def _polite_connection(
    port: int,
    request: bytes,
    counting_from: float,
    stop_at: float,
    by_status: dict[int, list[float]],
    retry_after: list[int],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    clock = time.monotonic
    try:
        while (started := clock()) < stop_at:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            fields = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (x.partition(":") for x in lines[1:] if x)
            )
            await reader.readexactly(int(fields.get("content-length", "0")))
            if started >= counting_from:
                by_status.setdefault(status, []).append(clock() - started)
                if status == 503 and "retry-after" in fields:
                    retry_after[0] += 1
            if status == 503:  # the polite part: wait as long as the server said
                await asyncio.sleep(float(fields.get("retry-after", "1")))
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def _polite(port: int, connections: int, body: bytes) -> Cell:
    request = build_request("127.0.0.1", port, "POST", "/", body)
    by_status: dict[int, list[float]] = {}
    retry_after = [0]

    async def drive() -> None:
        now = time.monotonic()
        counting_from = now + WARMUP_S[connections]
        stop_at = counting_from + MEASURE_S
        await asyncio.gather(
            *(
                _polite_connection(port, request, counting_from, stop_at, by_status, retry_after)
                for _ in range(connections)
            )
        )

    asyncio.run(drive())
    ok, shed = by_status.get(200, []), sorted(by_status.get(503, []))
    everything = sorted(x for xs in by_status.values() for x in xs)
    other = len(everything) - len(ok) - len(shed)
    return Cell(
        "10x, Retry-After honoured",
        connections,
        MEASURE_S,
        len(ok),
        len(shed),
        other,
        retry_after[0],
        {
            "all p50": percentile(everything, 0.5) * 1000,
            "all p99": percentile(everything, 0.99) * 1000,
            "503 p50": percentile(shed, 0.5) * 1000,
            "503 p99": percentile(shed, 0.99) * 1000,
        },
    )


def _shed_total(port: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mlfn_requests_shed_total{")
    )


def _table(cells: list[Cell]) -> str:
    head = (
        f"{'case':<28}{'conns':>6}{'ok/s':>9}{'503/s':>9}{'other':>7}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'503 p50':>9}{'503 p99':>9}"
    )
    rows = [head, "-" * len(head)]
    for c in cells:
        rows.append(
            f"{c.name:<28}{c.connections:>6}{c.goodput:>9.0f}{c.shed / c.seconds:>9.0f}"
            f"{c.other:>7}{c.latency_ms['all p50']:>9.1f}{c.latency_ms['all p99']:>9.1f}"
            f"{c.latency_ms.get('503 p50', math.nan):>9.1f}"
            f"{c.latency_ms.get('503 p99', math.nan):>9.1f}"
        )
    return "\n".join(rows)


def main() -> None:
    wrk = shutil.which("wrk")
    if wrk is None:
        print(
            "wrk is not installed (apt-get install -y wrk): falling back to bench/_load.py "
            "for the closed-loop cells; figures are not comparable with wrk's"
        )
    with tempfile.TemporaryDirectory(prefix="mlfn-bench-overload-") as home:
        tmp = Path(home)
        body = _body()
        body_path, script = tmp / "body.json", tmp / "post.lua"
        body_path.write_bytes(body)
        script.write_text(_WRK_SCRIPT)
        log_path = tmp / "serve.log"
        with _serve(home, log_path) as port:
            gen = "wrk" if wrk else "_load"
            cells = []
            for name, conns in (("at the limit", LIMIT), ("10x, Retry-After ignored", 10 * LIMIT)):
                label = f"{name} ({gen})"
                if wrk:
                    cells.append(_wrk(port, conns, body_path, script, label))
                else:
                    cells.append(_closed_loop(port, conns, body, label))
            cells.append(_polite(port, 10 * LIMIT, body))
            shed = _shed_total(port)
        messages = [
            json.loads(line).get("message", "")
            for line in log_path.read_text().splitlines()
            if line.startswith("{")
        ]
        shed_lines = sum(m.startswith("shedding load") for m in messages)
        per_request = sum(m.startswith("503 ") for m in messages)
    print(_table(cells))
    print(_targets(cells, shed, shed_lines, per_request))


def _targets(cells: list[Cell], shed: float, shed_lines: int, per_request: int) -> str:
    limit, ignored, polite = cells
    ratio = ignored.goodput / limit.goodput if limit.goodput else 0.0
    sheds = [c for c in cells if c.retry_after >= 0]
    carried = sum(c.retry_after for c in sheds)
    answered = sum(c.shed for c in sheds)
    p99, served = polite.latency_ms["503 p99"], limit.latency_ms["all p50"]
    out = [
        f"target: goodput at 10x {ignored.goodput:.0f}/s = {ratio:.0%} of {limit.goodput:.0f}/s "
        f"at the limit (at least {GOODPUT_TARGET:.0%}): "
        f"{'met' if ratio >= GOODPUT_TARGET else 'MISSED'}",
        f"target: 503s with Retry-After {carried} of {answered}: "
        f"{'met' if carried == answered else 'MISSED'}",
        f"target: 503 p99 for clients that honour Retry-After {p99:.1f} ms (at most the "
        f"p50 of a request served at the limit, {served:.1f} ms): "
        f"{'met' if p99 <= served else 'MISSED'}",
        f"target: {shed:.0f} requests shed (mlfn_requests_shed_total), {shed_lines} log lines "
        f"about it, {per_request} per-request 503 lines (none): "
        f"{'met' if per_request == 0 and shed_lines <= 10 else 'MISSED'}",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    main()
