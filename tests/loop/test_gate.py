"""The evaluation gate: the pure decision, the stable holdout, and what gets stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

from runtime.events import event_data
from runtime.models.store import LocalModelStore
from runtime.retraining.gate import (
    HOLDOUT_SCHEME,
    MODEL_PUBLISHED,
    MODEL_REJECTED,
    current_baseline,
    holdout_mask,
    in_holdout,
    judge,
    publish_verdict,
    score,
    verdict_event,
)

pytestmark = pytest.mark.unit


def test_judge_publishes_within_tolerance_and_rejects_beyond_it() -> None:
    cand = {"accuracy": 0.945, "holdout_rows": 200.0}
    assert judge(cand, {"accuracy": 0.95}, tolerance=0.01).publish
    v = judge(cand, {"accuracy": 0.96}, tolerance=0.01, current_version=3)
    assert not v.publish
    assert v.decision == "rejected"
    assert v.reason == "accuracy 0.9450 is below the current 0.9600 - tolerance 0.0100"
    assert (v.current_version, v.baseline, v.holdout_rows) == (3, "holdout", 200)


def test_judge_exactly_at_the_tolerance_edge_publishes() -> None:
    assert judge(
        {"accuracy": 0.94, "holdout_rows": 10.0}, {"accuracy": 0.95}, tolerance=0.01
    ).publish


def test_judge_with_no_current_model_publishes_a_scored_candidate() -> None:
    v = judge({"accuracy": 0.5, "holdout_rows": 10.0}, None, tolerance=0.0)
    assert v.publish and v.baseline == "none" and v.current is None


def test_judge_rejects_a_candidate_without_holdout_evidence() -> None:
    v = judge({"holdout_rows": 0.0}, {"accuracy": 0.9}, tolerance=0.5)
    assert not v.publish
    assert "holdout rows" in v.reason and "holdout_fraction" in v.reason


def test_holdout_is_stable_and_about_the_requested_fraction() -> None:
    ids = [f"event-{i}" for i in range(5000)]
    mask = holdout_mask(ids, 0.2)
    assert 0.17 < mask.mean() < 0.23
    assert all(in_holdout(i, 0.2) == m for i, m in zip(ids[:200], mask[:200], strict=True))
    # a larger fraction only adds rows: a row held out at 0.1 stays held out at 0.2
    small = holdout_mask(ids, 0.1)
    assert not np.any(small & ~mask)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def test_score_reports_accuracy_and_rows() -> None:
    X, y = _digits()
    clf = DummyClassifier(strategy="constant", constant=0).fit(X, y)
    s = score(clf, X, y)
    assert s["holdout_rows"] == len(y)
    assert s["accuracy"] == pytest.approx(np.mean(y == 0))
    assert score(clf, X[:0], y[:0]) == {"holdout_rows": 0.0}


def test_a_rejected_candidate_is_stored_but_never_becomes_latest(tmp_path: Path) -> None:
    X, y = _digits()
    store = LocalModelStore(tmp_path)
    good = LogisticRegression(max_iter=300).fit(X[:400], y[:400])
    first = store.publish("digits", good, metrics={"accuracy": 0.95})
    broken = DummyClassifier(strategy="most_frequent").fit(X, y)
    v = judge(score(broken, X[1000:], y[1000:]), {"accuracy": 0.95}, tolerance=0.01)
    stored = publish_verdict(store, "digits", broken, v, {"accuracy": 0.1})
    assert stored is not None and stored.version == 2
    assert store.latest("digits") == first.version
    assert store.info("digits", 2).extra["gate"]["decision"] == "rejected"
    assert publish_verdict(store, "digits", broken, v, {}, keep_rejected=False) is None
    ev = verdict_event("digits", v, stored, {"accuracy": 0.1}, source="/t")
    assert (ev["type"], ev["subject"]) == (MODEL_REJECTED, "digits")
    assert event_data(ev)["version"] == 2
    assert event_data(ev)["gate"]["decision"] == "rejected"


def test_an_accepted_candidate_moves_latest_and_announces_published(tmp_path: Path) -> None:
    X, y = _digits()
    store = LocalModelStore(tmp_path)
    clf = LogisticRegression(max_iter=300).fit(X[:400], y[:400])
    v = judge({"accuracy": 0.97, "holdout_rows": 100.0}, None, tolerance=0.01)
    stored = publish_verdict(store, "digits", clf, v, {"accuracy": 0.97}, extra={"k": 1})
    assert stored is not None and store.latest("digits") == stored.version
    assert stored.extra["k"] == 1 and stored.extra["gate"]["publish"] is True
    ev = verdict_event("digits", v, stored, {"accuracy": 0.97}, source="/t")
    assert ev["type"] == MODEL_PUBLISHED
    assert event_data(ev)["metrics"] == {"accuracy": 0.97}


def test_baseline_scores_a_loop_version_on_the_holdout_but_trusts_others_records(
    tmp_path: Path,
) -> None:
    X, y = _digits()
    store = LocalModelStore(tmp_path)
    assert current_baseline(store, "digits", X, y, fraction=0.2) == (None, None, "none")
    clf = LogisticRegression(max_iter=300).fit(X[:500], y[:500])
    store.publish("digits", clf, metrics={"accuracy": 0.5}, extra={"bootstrap": True})
    metrics, version, base = current_baseline(store, "digits", X[500:], y[500:], fraction=0.2)
    assert (metrics, version, base) == ({"accuracy": 0.5}, 1, "recorded")
    store.publish(
        "digits",
        clf,
        metrics={"accuracy": 0.5},
        extra={"holdout_scheme": HOLDOUT_SCHEME, "holdout_fraction": 0.2},
    )
    metrics, version, base = current_baseline(store, "digits", X[500:], y[500:], fraction=0.2)
    assert (version, base) == (2, "holdout")
    assert metrics is not None and metrics["accuracy"] > 0.85  # scored, not the record
