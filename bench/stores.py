"""The shared stores: freshness with PostgreSQL beside the local stores, and append rate.

Starts a PostgreSQL server of its own on a free loopback port (durable: fsync on, as
PostgreSQL ships), then:

- **freshness**: the loop of ``bench/freshness.py`` (threshold record produced ->
  ``predict`` answers with the new version) under ``mlfn dev`` with the local stores and
  with ``MLFN_DATABASE_URL`` (model registry, datasets and retraining state in
  PostgreSQL); target <= 10 s;
- **swap**: publish committed on one replica -> a handle on another (its own pool and
  listener, as another process) serves the new version: with ``LISTEN``/``NOTIFY`` and
  with polling alone (``poll_seconds`` 2, the default); target <= ``poll_seconds``;
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

FRESHNESS_TRIALS = 3
SWAP_TRIALS = 5
SWAP_POLL_SECONDS = 2.0
"""``poll_seconds`` of the handle: the default of ``ModelRef``."""
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


def swap_seconds(url: str, *, listen: bool) -> list[float]:
    """Seconds from a committed publish to another replica's handle serving it."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from runtime.models import ModelHandle
    from runtime.models.store import PointerWatch
    from runtime.spec import ModelRef
    from runtime.stores.database import Database
    from runtime.stores.pg_models import PgModelStore

    class PollingOnly(PgModelStore):
        def watch(self, name: str) -> PointerWatch | None:  # type: ignore[override]
            return None

    publisher_db, server_db = Database(url), Database(url)
    publisher = PgModelStore(publisher_db)
    server = PgModelStore(server_db) if listen else PollingOnly(server_db)
    model = f"swap-{'listen' if listen else 'poll'}"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4))
    tiny = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    publisher.publish(model, tiny)
    handle = ModelHandle(ModelRef(name=model, poll_seconds=SWAP_POLL_SECONDS), server)
    times: list[float] = []
    try:
        handle.start()
        for _ in range(SWAP_TRIALS):
            served = handle.current().version
            time.sleep(rng.uniform(0, SWAP_POLL_SECONDS))  # a random moment of the poll cycle
            publisher.publish(model, tiny)  # returns once committed
            t0 = time.perf_counter()
            while handle.current().version == served:
                time.sleep(0.001)  # polling interval of the measured condition
            times.append(time.perf_counter() - t0)
    finally:
        handle.stop()
        publisher_db.close()
        server_db.close()
    return times


def main() -> None:
    from bench import freshness
    from tests.fixtures.postgres import running_postgres

    with running_postgres(durable=True) as server:
        rates = append_rates(server.create_database())
        swaps = {
            "LISTEN/NOTIFY (poll as fallback)": swap_seconds(server.create_database(), listen=True),
            "polling alone": swap_seconds(server.create_database(), listen=False),
        }
        pg = freshness.measure(FRESHNESS_TRIALS, server.create_database())
    local = freshness.measure(FRESHNESS_TRIALS)
    freshness._print(*local, store="local")
    freshness._print(*pg, store="PostgreSQL")
    print()
    print(f"{'store':<12} {'p50 freshness':>14} {'target':>8}  trials")
    for name, (results, *_rest) in (("local", local), ("PostgreSQL", pg)):
        done = freshness.published(results)
        figure = f"{statistics.median(done):.2f}s" if done else "n/a"
        verdict = (
            "" if not done else "met" if statistics.median(done) <= TARGET_FRESHNESS_S else "MISSED"
        )
        trials = ", ".join(f"{t:.2f}s" for t in done)
        others = [r["decision"] for r in results if r["decision"] != "published"]
        if others:
            trials += f" ({', '.join(others)}: not counted)"
        print(
            f"{name:<12} {figure:>14} {'<= ' + format(TARGET_FRESHNESS_S, 'g') + 's':>8}  "
            f"{verdict} {trials}"
        )
    print()
    print(
        f"publish committed -> another replica serves it, {SWAP_TRIALS} trials  "
        f"{'p50':>8} {'max':>8} {'target':>8}"
    )
    for name, times in swaps.items():
        verdict = "met" if max(times) <= SWAP_POLL_SECONDS else "MISSED"
        print(
            f"{name:<44} {statistics.median(times) * 1000:>6.1f}ms {max(times) * 1000:>6.1f}ms "
            f"{'<= ' + format(SWAP_POLL_SECONDS, 'g') + 's':>8} {verdict}"
        )
    print()
    print(f"dataset append into PostgreSQL (fsync on)  {'rows/s':>10} {'target':>10}")
    for name, rate in rates.items():
        verdict = "meets" if rate >= TARGET_ROWS_S else "MISSES"
        print(f"{name:<42} {rate:>10.0f} {'>= ' + format(TARGET_ROWS_S, 'g'):>10} {verdict}")


if __name__ == "__main__":
    main()
