from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from functions._digits import PredictRequest, digits
from functions.predict import bootstrap_digits, predict
from runtime.function import function_of
from runtime.models import LocalModelStore

pytestmark = pytest.mark.unit


def test_bootstrap_publishes_version_1_that_predicts_held_out_digits(
    store: LocalModelStore,
) -> None:
    bootstrap_digits(store)
    meta = store.info("digits")
    assert meta.version == 1 and meta.extra["bootstrap"] is True
    assert meta.metrics["accuracy"] > 0.9 and meta.metrics["holdout_rows"] == 797
    X, y = digits()
    model = store.load("digits")
    # held-out rows (never trained on), one request per row and one many-row request
    singles = predict([PredictRequest(instances=[row]) for row in X[1500:1564].tolist()], model)
    assert [len(r.predictions) for r in singles] == [1] * 64
    many = predict([PredictRequest(instances=X[1000:].tolist())], model)
    assert np.mean(np.array(many[0].predictions) == y[1000:]) > 0.9
    assert [r.predictions[0] for r in singles] == many[0].predictions[500:564]
    assert all(r.probabilities is None for r in singles)


def test_probabilities_on_request(store: LocalModelStore) -> None:
    bootstrap_digits(store)
    X, _ = digits()
    plain, probs = predict(
        [
            PredictRequest(instances=X[:1].tolist()),
            PredictRequest(instances=X[:2].tolist(), probabilities=True),
        ],
        store.load("digits"),
    )
    assert plain.probabilities is None
    assert probs.probabilities is not None and len(probs.probabilities) == 2
    assert all(abs(sum(p) - 1) < 1e-4 for p in probs.probabilities)
    assert int(np.argmax(probs.probabilities[0])) == probs.predictions[0] == plain.predictions[0]


def test_request_schema_and_spec() -> None:
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        PredictRequest(instances=[[16.0] * 64])  # raw pixels: run preprocess first
    with pytest.raises(ValidationError, match="at least 1 item"):
        PredictRequest(instances=[])
    spec = function_of(predict).spec  # type: ignore[union-attr]
    assert spec.model is not None and spec.model.name == "digits"
    assert spec.batching is not None and spec.batching.max_batch_size == 64
    assert spec.resources.gpus == 0
