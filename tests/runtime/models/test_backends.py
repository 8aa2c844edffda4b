from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from runtime.errors import ModelStoreError
from runtime.models import LocalModelStore, SklearnBackend, UnsafeModelError, get_backend

pytestmark = pytest.mark.unit


class Custom(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """An estimator skops does not know: its type is untrusted by default."""

    def fit(self, X: Any, y: Any) -> Custom:
        self.answer_ = int(y[0])
        return self

    def predict(self, X: Any) -> Any:
        return np.full(len(X), self.answer_)


def test_unknown_types_are_refused_unless_allowed() -> None:
    files = SklearnBackend().dump(Custom().fit([[0.0]], [7]))
    with pytest.raises(UnsafeModelError, match=r"not trusted: .*test_backends.Custom"):
        SklearnBackend().load(files)
    trusted = SklearnBackend(trusted={f"{__name__}.Custom"})
    assert trusted.load(files).predict([[1.0]]).tolist() == [7]


def test_pickles_in_the_store_are_never_loaded(store: LocalModelStore) -> None:
    store.put("toy", {"model.skops": pickle.dumps({"x": 1})}, backend="sklearn")
    with pytest.raises(UnsafeModelError, match=r"not a skops file.*never unpickles"):
        store.load("toy")


def test_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(
        ModelStoreError, match="no model backend named 'onnx'; known: sklearn, torch"
    ):
        get_backend("onnx")
