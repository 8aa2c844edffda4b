"""Rows added concurrently (one event per request, many in flight): the row trigger still
counts every new row once, duplicates none, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from runtime.datasets import DatasetLike, DatasetStore
from runtime.models.store import LocalModelStore
from runtime.retraining import RetrainLoop
from runtime.retraining.progress import TrainingMetrics
from runtime.spec import RetrainPolicy
from runtime.stores.database import Database
from runtime.stores.pg_datasets import PgDatasetStore
from runtime.stores.retrain_state import LocalRetrainState
from tests.fixtures.waiting import wait_for
from tests.loop.test_loop import fit, rows


def concurrently(calls: list[Callable[[], Any]], workers: int = 32) -> list[Any]:
    """Run the calls from ``workers`` threads at once; their results, in order."""
    out: list[Any] = [None] * len(calls)
    go = threading.Barrier(workers)
    lock = threading.Lock()
    todo = list(enumerate(calls))

    def worker() -> None:
        go.wait()
        while True:
            with lock:
                if not todo:
                    return
                i, call = todo.pop()
            out[i] = call()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    return out


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def dataset(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatasetLike]:
    if request.param == "sqlite":
        store = DatasetStore(tmp_path / "datasets")
        yield store.open("digits")
        store.close()
        return
    db = Database(request.getfixturevalue("database_url"))
    yield PgDatasetStore(db).open("digits")
    db.close()


@pytest.mark.unit
def test_the_row_trigger_counts_rows_added_in_flight_once(
    dataset: DatasetLike, tmp_path: Path
) -> None:
    metrics = TrainingMetrics(CollectorRegistry())
    loop = RetrainLoop(
        RetrainPolicy(model="digits", every_rows=50, debounce_seconds=0.0),
        models=LocalModelStore(tmp_path / "models"),
        dataset=dataset,
        fit=fit,
        emit=lambda ev: None,
        metrics=metrics,
        state=LocalRetrainState(tmp_path / "retrain"),  # pending counts come from the store
    ).start()
    try:
        some = rows(0, 50)
        added = concurrently([lambda r=r: loop.add([r]) for r in some[:49]])
        assert added == [1] * 49 and loop.driver.pending_rows == 49
        assert loop.outcomes == []  # 49 < every_rows: no training
        # the 50th row, and the first 49 again (redeliveries racing it): one training, of 50
        again = concurrently([lambda r=r: loop.add([r]) for r in some])
        assert sorted(again) == [0] * 49 + [1]
        (outcome,) = loop.wait_outcomes(1, 60)
        assert outcome.ticket.rows == 50 and outcome.decision == "published"
        assert metrics.duplicates.labels("digits")._value.get() == 49
        wait_for(lambda: loop.driver.pending_rows == 0, 10, "the pending count to settle")
        assert dataset.count() == 50
        assert loop._syncs.items == 50  # one per call that stored a row: 49 + 1
    finally:
        assert loop.stop(30)
