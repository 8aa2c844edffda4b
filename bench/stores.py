"""The shared stores: freshness with PostgreSQL beside the local stores, and append rate.

Starts a PostgreSQL server of its own on a free loopback port (durable: fsync on, as
PostgreSQL ships), then:

- **freshness**: the loop of ``bench/freshness.py`` (threshold record produced ->
  ``predict`` answers with the new version) under ``mlfn dev`` with the local stores and
  with ``MLFN_DATABASE_URL`` (model registry, datasets and retraining state in
  PostgreSQL); target <= 10 s;
- **dataset append**: rows/s into the PostgreSQL dataset store, one row per transaction
  as the retrain function stores one event (sequential, and from 8 threads as
  concurrent deliveries do), and in batches of 100; target >= 1,000 rows/s (the event
  delivery rate).

``python -m bench stores`` prints the table.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

FRESHNESS_TRIALS = 2
APPEND_SECONDS = 3.0
TARGET_FRESHNESS_S = 10.0
TARGET_ROWS_S = 1000.0


def _rows(prefix: str, n: int) -> list[Any]:
    from runtime.datasets import Row

    return [Row(f"{prefix}-{i}", [float(i % 17)] * 64, i % 10) for i in range(n)]


def _rate(work: Callable[[int], int], threads: int) -> float:
    """Rows per second that ``threads`` workers calling ``work(worker)`` sustain."""
    done = [0] * threads
    stop = time.monotonic() + APPEND_SECONDS

    def run(k: int) -> None:
        while time.monotonic() < stop:
            done[k] += work(k)

    began = time.monotonic()
    pool = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done) / (time.monotonic() - began)


def append_rates(url: str) -> dict[str, float]:
    """rows/s: single-row transactions (1 and 8 threads) and batches of 100."""
    from runtime.settings import RuntimeSettings
    from runtime.stores import close_all, open_stores

    settings = RuntimeSettings().updated(models={"database_url": url})
    ds = open_stores(settings).datasets.open("bench")
    counters = [iter(range(10**9)) for _ in range(8)]

    def one(k: int) -> int:
        i = next(counters[k])
        return ds.append(_rows(f"s{k}-{i}", 1))

    def batch(k: int) -> int:
        i = next(counters[k])
        return ds.append(_rows(f"b{k}-{i}", 100))

    try:
        return {
            "1 row/transaction, 1 thread": _rate(one, 1),
            "1 row/transaction, 8 threads": _rate(one, 8),
            "100 rows/transaction, 1 thread": _rate(batch, 1),
        }
    finally:
        close_all()


def main() -> None:
    from bench import freshness
    from tests.fixtures.postgres import running_postgres

    with running_postgres(durable=True) as server:
        rates = append_rates(server.create_database())
        pg = freshness.measure(FRESHNESS_TRIALS, server.create_database())
    local = freshness.measure(FRESHNESS_TRIALS)
    freshness._print(*local, store="local")
    freshness._print(*pg, store="PostgreSQL")
    print()
    print(f"{'store':<12} {'p50 freshness':>14} {'target':>8}")
    for name, (results, *_rest) in (("local", local), ("PostgreSQL", pg)):
        done = [r["total"] for r in results if r["decision"] == "published"]
        figure = f"{statistics.median(done):.2f}s" if done else "n/a"
        print(f"{name:<12} {figure:>14} {'<= ' + format(TARGET_FRESHNESS_S, 'g') + 's':>8}")
    print()
    print(f"dataset append into PostgreSQL (fsync on)  {'rows/s':>10} {'target':>10}")
    for name, rate in rates.items():
        verdict = "meets" if rate >= TARGET_ROWS_S else "MISSES"
        print(f"{name:<42} {rate:>10.0f} {'>= ' + format(TARGET_ROWS_S, 'g'):>10} {verdict}")


if __name__ == "__main__":
    main()
