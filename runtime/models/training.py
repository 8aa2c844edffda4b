"""Training and evaluation of scikit-learn classifiers, reusable by retrain functions.

:func:`train_classifier` fits on a stratified split and reports holdout metrics, so a
retrain policy can compare a candidate with the served model (:func:`evaluate`) before
publishing it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["TrainResult", "default_classifier", "evaluate", "train_classifier"]


@dataclass(frozen=True)
class TrainResult:
    """A fitted model and its figures (holdout accuracy, rows, fit time)."""

    model: Any
    metrics: dict[str, float]


def default_classifier() -> Any:
    """Multinomial logistic regression: ~40 ms on the 1,797 digits rows, ~97% accuracy."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=300)


def evaluate(model: Any, X: NDArray[Any], y: NDArray[Any]) -> dict[str, float]:
    """Accuracy of ``model`` on ``(X, y)``."""
    if len(y) == 0:
        return {}
    return {"accuracy": float(np.mean(model.predict(X) == y))}


def train_classifier(
    X: NDArray[Any],
    y: NDArray[Any],
    *,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    make: Callable[[], Any] = default_classifier,
    threads: int | None = 1,
) -> TrainResult:
    """Fit ``make()`` on a stratified split of ``(X, y)``; report accuracy on the rest.

    With too few rows for a holdout (fewer than two per class), it fits on everything
    and reports no accuracy. ``threads`` caps BLAS/OpenMP threads while fitting (None: no
    cap): a small model fits several times faster on one thread than with threads
    contending for cores with the server (86 ms vs 615 ms for the digits on 2 busy cores).

    Raises:
        ValueError: fewer than two classes, or X and y of different lengths.
    """
    from sklearn.model_selection import train_test_split
    from threadpoolctl import threadpool_limits

    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"training needs at least two classes; found {classes.tolist()}")
    n_holdout = int(len(y) * holdout_fraction)
    holdout = counts.min() >= 2 and n_holdout >= len(classes)
    if holdout:
        X_tr, X_ho, y_tr, y_ho = train_test_split(
            X, y, test_size=n_holdout, random_state=seed, stratify=y
        )
    else:
        X_tr, X_ho, y_tr, y_ho = X, X[:0], y, y[:0]
    model = make()
    started = time.perf_counter()
    with threadpool_limits(threads):
        model.fit(X_tr, y_tr)
    metrics = {
        "fit_seconds": round(time.perf_counter() - started, 4),
        "train_rows": float(len(y_tr)),
        "holdout_rows": float(len(y_ho)),
        **evaluate(model, X_ho, y_ho),
    }
    return TrainResult(model, metrics)
