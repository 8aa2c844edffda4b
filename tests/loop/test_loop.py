"""The retrain loop on real stores: idempotent rows, trainings per policy, the gate, events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sklearn.linear_model import LogisticRegression

from runtime.datasets import DatasetStore, Row
from runtime.events import CloudEvent, event_data
from runtime.models.store import LocalModelStore
from runtime.retraining import MODEL_PUBLISHED, MODEL_REJECTED, Progress, RetrainLoop
from runtime.retraining.progress import TrainingMetrics
from runtime.spec import RetrainPolicy

pytestmark = pytest.mark.unit

DEADLINE = 30.0


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def rows(start: int, stop: int) -> list[Row]:
    X, y = digits()
    return [Row(f"ev-{i}", X[i].tolist(), int(y[i])) for i in range(start, stop)]


def fit(X: np.ndarray, y: np.ndarray, progress: Progress) -> Any:
    clf = LogisticRegression(max_iter=300).fit(X, y)
    progress.iteration(int(clf.n_iter_.max()))
    return clf


def fit_shuffled(X: np.ndarray, y: np.ndarray, progress: Progress) -> Any:
    """A deliberately broken training: the labels are shuffled."""
    return fit(X, np.random.default_rng(0).permutation(y), progress)


class Env:
    def __init__(self, root: Path) -> None:
        self.models = LocalModelStore(root / "models")
        self.datasets = DatasetStore(root / "datasets")
        self.events: list[CloudEvent] = []
        self.metrics = TrainingMetrics(CollectorRegistry())
        self.loops: list[RetrainLoop] = []

    def loop(self, fit_fn: Any = fit, **policy: Any) -> RetrainLoop:
        policy.setdefault("debounce_seconds", 0.0)
        loop = RetrainLoop(
            RetrainPolicy(model="digits", **policy),
            models=self.models,
            dataset=self.datasets.open("digits"),
            fit=fit_fn,
            emit=self.events.append,
            metrics=self.metrics,
        )
        self.loops.append(loop)
        return loop.start()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    for loop in e.loops:
        assert loop.stop(DEADLINE)


def test_the_loop_publishes_rejects_and_never_serves_a_broken_candidate(env: Env) -> None:
    X, y = digits()
    boot = LogisticRegression(max_iter=300).fit(X[:1000], y[:1000])
    env.models.publish("digits", boot, metrics={"accuracy": 0.93}, extra={"bootstrap": True})

    loop = env.loop(every_rows=600)
    assert loop.add(rows(0, 599)) == 599
    assert loop.driver.wait_idle(DEADLINE)
    assert loop.outcomes == []  # one row short of the threshold
    assert loop.add(rows(0, 600)) == 1  # a redelivery adds only the new row
    [first] = loop.wait_outcomes(1, DEADLINE)
    assert first.decision == "published", first.reason
    assert first.verdict is not None and first.verdict.baseline == "recorded"
    assert env.models.latest("digits") == first.version == 2
    meta = env.models.info("digits", 2)
    assert meta.data is not None and meta.data.rows == 600
    assert meta.extra["gate"]["decision"] == "published"
    assert meta.metrics["accuracy"] > 0.9 and meta.metrics["train_rows"] < 600
    assert set(first.phases) >= {"read", "fit", "evaluate", "publish", "emit"}

    second = env.loop(every_rows=600)  # a fresh process: nothing pending
    assert second.driver.pending_rows == 0
    assert second.stop(DEADLINE)

    loop.stop(DEADLINE)
    broken = env.loop(fit_shuffled, every_rows=600)
    broken.add(rows(600, 1200))
    [bad] = broken.wait_outcomes(1, DEADLINE)
    assert bad.decision == "rejected", bad.reason
    assert bad.verdict is not None and bad.verdict.baseline == "holdout"
    assert env.models.latest("digits") == 2  # v3 is stored, never latest
    assert env.models.info("digits", 3).extra["gate"]["decision"] == "rejected"

    assert [e["type"] for e in env.events] == [MODEL_PUBLISHED, MODEL_REJECTED]
    assert [e["subject"] for e in env.events] == ["digits", "digits"]
    assert [event_data(e)["version"] for e in env.events] == [2, 3]
    assert event_data(env.events[0])["metrics"]["accuracy"] > 0.9
    gauge = env.metrics.registry.get_sample_value  # what the Grafana dashboard plots
    published = gauge("mlfn_model_holdout_accuracy", {"model": "digits", "decision": "published"})
    rejected = gauge("mlfn_model_holdout_accuracy", {"model": "digits", "decision": "rejected"})
    assert published == env.models.info("digits", 2).metrics["accuracy"]
    assert rejected == env.models.info("digits", 3).metrics["accuracy"]


def test_too_little_data_is_skipped_not_failed(env: Env) -> None:
    loop = env.loop(every_rows=5)
    loop.add(rows(0, 5))
    [out] = loop.wait_outcomes(1, DEADLINE)
    assert out.decision == "skipped"
    assert "need at least 20 rows" in out.reason
    assert env.events == []


def test_a_failing_fit_is_recorded_and_announces_nothing(env: Env) -> None:
    def explode(X: np.ndarray, y: np.ndarray, progress: Progress) -> Any:
        raise ValueError("bad hyperparameter")

    loop = env.loop(explode, every_rows=100)
    loop.add(rows(0, 100))
    [out] = loop.wait_outcomes(1, DEADLINE)
    assert out.decision == "failed" and "bad hyperparameter" in out.reason
    assert env.events == []
    assert env.models.names() == []


def test_first_version_with_an_empty_store_is_published(env: Env) -> None:
    loop = env.loop(every_rows=300)
    loop.add(rows(0, 300))
    [out] = loop.wait_outcomes(1, DEADLINE)
    assert out.decision == "published" and out.verdict is not None
    assert out.verdict.baseline == "none"
    assert env.models.latest("digits") == 1


def test_rows_of_a_batch_are_collected_and_stored_in_one_append(env: Env) -> None:
    from runtime.retraining.together import rows_together

    loop = env.loop(every_rows=1000)
    ds = loop.dataset
    appends: list[int] = []
    real = ds.append

    def counting(batch: Any) -> int:
        batch = list(batch)
        appends.append(len(batch))
        return real(batch)

    ds.append = counting  # type: ignore[method-assign]
    with rows_together() as together:
        for i in range(5):
            assert loop.add(rows(i, i + 1)) == 0  # collected, not yet stored
        assert ds.count() == 0 and appends == []
        assert together.flush() == 5
    assert appends == [5] and ds.count() == 5
    assert loop.driver.pending_rows == 5
    with rows_together():
        loop.add(rows(5, 8))  # never flushed: the request failed, its delivery is retried
    assert ds.count() == 5
    assert loop.add(rows(4, 6)) == 1  # outside a batch: stored at once (ev-4 again: skipped)
    assert appends == [5, 2]
