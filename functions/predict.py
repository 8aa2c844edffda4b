"""``predict``: HTTP inference on the digits model, with dynamic batching."""

from __future__ import annotations

from functions._digits import (
    MODEL,
    PredictRequest,
    PredictResponse,
    batch_rows,
    bootstrap_rows,
    digits,
    split,
)
from runtime import LoadedModel, ModelStore, inference, register_bootstrap
from runtime.models import evaluate, train_classifier


@inference(
    request=PredictRequest,
    response=PredictResponse,
    model=MODEL,
    batching={"max_batch_size": 64, "max_wait_ms": 2},
    scaling={"target": 50, "container_concurrency": 100},
    resources={"cpu": "500m", "memory": "512Mi"},
)
def predict(batch: list[PredictRequest], model: LoadedModel) -> list[PredictResponse]:
    """Classify 8x8 digits: each row is 64 features in 0..1; answers the digit 0..9."""
    X, _ = batch_rows(batch)
    clf = model.model
    if any(r.probabilities for r in batch):
        probs = clf.predict_proba(X)
        labels = clf.classes_[probs.argmax(axis=1)].tolist()
        return split(batch, labels, probs)
    return split(batch, clf.predict(X).tolist(), None)


@register_bootstrap(MODEL)
def bootstrap_digits(store: ModelStore) -> None:
    """Version 1 on a fresh clone: trained on the first bundled rows, tested on the rest."""
    X, y = digits()
    n = bootstrap_rows()
    clf = train_classifier(X[:n], y[:n], holdout_fraction=0.0).model
    metrics = {**evaluate(clf, X[n:], y[n:]), "train_rows": n, "holdout_rows": len(y) - n}
    store.publish(
        MODEL,
        clf,
        metrics=metrics,
        extra={"bootstrap": True, "source": f"sklearn.datasets.load_digits rows 0..{n - 1}"},
    )
