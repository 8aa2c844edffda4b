"""The retrain loop on the shared PostgreSQL stores: replicas, single flight, scale to zero."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from runtime.retraining import Progress, RetrainLoop
from runtime.retraining.progress import TrainingMetrics
from runtime.spec import RetrainPolicy
from runtime.stores.database import Database
from runtime.stores.pg_datasets import PgDatasetStore
from runtime.stores.pg_models import PgModelStore
from runtime.stores.retrain_state import PgRetrainState
from tests.fixtures.waiting import wait_for
from tests.loop.test_loop import fit, rows

pytestmark = pytest.mark.integration


class Replica:
    """One retrain replica: a pool of its own on the shared database, its own loop."""

    def __init__(self, url: str, name: str, fit_fn: Any = fit, **policy: Any) -> None:
        self.db = Database(url)
        self.name = name
        self.models = PgModelStore(self.db)
        self.events: list[Any] = []
        policy.setdefault("debounce_seconds", 0.0)
        self.loop = RetrainLoop(
            RetrainPolicy(model="digits", **policy),
            models=self.models,
            dataset=PgDatasetStore(self.db).open("digits"),
            fit=fit_fn,
            emit=self.events.append,
            metrics=TrainingMetrics(CollectorRegistry()),
            state=PgRetrainState(self.db),
        ).start()

    def close(self) -> None:
        self.loop.stop()
        self.db.close()


@pytest.fixture
def replicas(database_url: str) -> Iterator[list[Replica]]:
    made: list[Replica] = []
    yield made
    for r in made:
        r.close()


def _waiting_advisory_locks(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()
    return int(row[0]) if row else 0


def test_two_replicas_never_train_the_same_model_at_once(
    database_url: str, replicas: list[Replica]
) -> None:
    intervals: list[tuple[str, float, float]] = []
    release = threading.Event()

    def slow_fit(who: str) -> Any:
        def run(X: np.ndarray, y: np.ndarray, progress: Progress) -> Any:
            began = time.monotonic()
            if who == "a":
                release.wait(30)  # hold the training until b is seen waiting for the lock
            model = fit(X, y, progress)
            intervals.append((who, began, time.monotonic()))
            return model

        return run

    a = Replica(database_url, "a", slow_fit("a"), every_rows=10_000)
    b = Replica(database_url, "b", slow_fit("b"), every_rows=10_000)
    replicas += [a, b]
    assert a.loop.add(rows(0, 300)) == 300
    assert b.loop.add(rows(0, 300)) == 0  # one dataset: the rows are there already
    a.loop.request("test a")
    wait_for(lambda: a.loop.metrics.in_progress.labels("digits")._value.get() == 1, 30, "a trains")
    b.loop.request("test b")
    wait_for(lambda: _waiting_advisory_locks(database_url) >= 1, 30, "b waiting for the lock")
    assert not [i for i in intervals if i[0] == "b"]  # b has not started while a holds it
    release.set()
    wait_for(lambda: len(a.loop.outcomes) == len(b.loop.outcomes) == 1, 60, "both trainings")
    (first, _fa, la), (second, fb, _) = intervals
    assert (first, second) == ("a", "b") and fb >= la  # one after the other, never at once
    assert [v.version for v in a.models.versions("digits")] == [1, 2]


def test_a_replica_woken_from_zero_keeps_the_time_trigger(
    database_url: str, replicas: list[Replica]
) -> None:
    first = Replica(database_url, "first", every_seconds=3600, min_rows=10)
    replicas.append(first)
    first.loop.add(rows(0, 200))
    assert first.loop.tick(timeout=5)  # an hour has not passed: nothing to do
    assert first.loop.outcomes == [] and first.models.versions("digits") == []
    first.close()
    replicas.remove(first)
    with psycopg.connect(database_url) as conn:  # as if the last training was long ago
        conn.execute("UPDATE mlfn_retrain_state SET since = now() - interval '2 hours'")
    woken = Replica(database_url, "woken", every_seconds=3600, min_rows=10)  # from zero
    replicas.append(woken)
    assert woken.loop.tick(timeout=60)  # the ping: the stored epoch makes it due now
    (outcome,) = woken.loop.outcomes
    assert outcome.decision == "published" and "every_seconds=3600" in outcome.ticket.reason
    record = woken.loop.state.get("digits")  # type: ignore[union-attr]
    assert record.trainings == 1 and record.last_outcome == "published"
