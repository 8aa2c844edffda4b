"""predict-torch on the CPU here, on CUDA when a GPU is present."""

from __future__ import annotations

import numpy as np
import pytest

from functions._digits import PredictRequest, digits
from runtime.function import function_of
from runtime.models import LocalModelStore, torch_available

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(
        not torch_available(), reason="torch extra not installed: pip install 'mlfn[torch]'"
    ),
]


def test_bootstrap_and_serve_the_torch_mlp(store: LocalModelStore) -> None:
    import torch

    from functions.predict_torch import bootstrap_digits_torch, predict_torch

    bootstrap_digits_torch(store)
    meta = store.info("digits-torch")
    assert meta.backend == "torch" and meta.metrics["accuracy"] > 0.88
    model = store.load("digits-torch")
    assert model.model.device == ("cuda" if torch.cuda.is_available() else "cpu")
    X, y = digits()
    (many,) = predict_torch([PredictRequest(instances=X[1000:].tolist())], model)
    assert np.mean(np.array(many.predictions) == y[1000:]) > 0.88
    one, probs = predict_torch(
        [
            PredictRequest(instances=X[:1].tolist()),
            PredictRequest(instances=X[:1].tolist(), probabilities=True),
        ],
        model,
    )
    assert one.predictions == probs.predictions and probs.probabilities is not None
    assert abs(sum(probs.probabilities[0]) - 1) < 1e-4


def test_spec_asks_for_a_gpu() -> None:
    from functions.predict_torch import predict_torch

    spec = function_of(predict_torch).spec  # type: ignore[union-attr]
    assert spec.name == "predict-torch" and spec.is_gpu
    assert spec.model is not None and spec.model.backend == "torch"
    assert spec.resources.node_selector == {"nvidia.com/gpu.present": "true"}
    assert spec.resources.tolerations[0].key == "nvidia.com/gpu"
