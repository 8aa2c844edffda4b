"""``predict-torch``: the digits served by a small PyTorch MLP, on a GPU when deployed.

Its spec asks for one ``nvidia.com/gpu`` with a GPU node selector and toleration; the
torch backend moves the model to CUDA when one is visible, and to the CPU otherwise, so
it also serves on a laptop. torch is imported only when the model is built or called.
"""

from __future__ import annotations

from typing import Any

from functions._digits import (
    PredictRequest,
    PredictResponse,
    batch_rows,
    bootstrap_rows,
    digits,
    split,
)
from runtime import LoadedModel, ModelStore, inference, register_bootstrap
from runtime.models import TorchModel, evaluate, pick_device, register_architecture

MODEL = "digits-torch"
ARCH = "digits-mlp"


@register_architecture(ARCH)
def digits_mlp(hidden: int = 64) -> Any:
    """64 features -> ``hidden`` ReLU units -> 10 logits."""
    from torch import nn

    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


class _Classifier:
    """sklearn-style ``predict`` over a module, for :func:`evaluate`."""

    def __init__(self, module: Any, device: str) -> None:
        self.module, self.device = module, device

    def predict(self, X: Any) -> Any:
        return _logits(self.module, self.device, X).argmax(dim=1).cpu().numpy()


def _logits(module: Any, device: str, X: Any) -> Any:
    import torch

    with torch.inference_mode():
        return module(torch.as_tensor(X, dtype=torch.float32, device=device))


def train_mlp(X: Any, y: Any, *, hidden: int = 64, steps: int = 120, seed: int = 0) -> TorchModel:
    """Full-batch Adam on ``(X, y)``: a quarter of a second on one idle CPU core for 1,000 rows."""
    import torch

    torch.manual_seed(seed)
    device = pick_device()
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)  # a 64-wide MLP: more threads only contend for the cores
    try:
        module = digits_mlp(hidden).to(device)
        opt = torch.optim.Adam(module.parameters(), lr=0.01)
        Xt = torch.as_tensor(X, dtype=torch.float32, device=device)
        yt = torch.as_tensor(y, dtype=torch.long, device=device)
        loss_fn = torch.nn.CrossEntropyLoss()
        module.train()
        for _ in range(steps):
            opt.zero_grad()
            loss_fn(module(Xt), yt).backward()
            opt.step()
        module.eval()
    finally:
        torch.set_num_threads(threads)
    return TorchModel(ARCH, module, {"hidden": hidden}, device)


@inference(
    name="predict-torch",
    request=PredictRequest,
    response=PredictResponse,
    model={"name": MODEL, "backend": "torch"},
    batching={"max_batch_size": 64, "max_wait_ms": 2},
    resources={
        "cpu": "1",
        "memory": "2Gi",
        "gpus": 1,
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
)
def predict_torch(batch: list[PredictRequest], model: LoadedModel) -> list[PredictResponse]:
    """Classify 8x8 digits with a torch MLP (CUDA when present); same API as ``predict``."""
    X, _ = batch_rows(batch)
    tm: TorchModel = model.model
    probs = _logits(tm.module, tm.device, X).softmax(dim=1)
    labels = probs.argmax(dim=1).cpu().tolist()
    wants = any(r.probabilities for r in batch)
    return split(batch, labels, probs.cpu().numpy() if wants else None)


@register_bootstrap(MODEL)
def bootstrap_digits_torch(store: ModelStore) -> None:
    """Version 1 on a fresh clone: the MLP trained on the first bundled rows."""
    X, y = digits()
    n = bootstrap_rows()
    tm = train_mlp(X[:n], y[:n])
    metrics = {
        **evaluate(_Classifier(tm.module, tm.device), X[n:], y[n:]),
        "train_rows": n,
        "holdout_rows": len(y) - n,
    }
    store.publish(
        MODEL,
        tm,
        backend="torch",
        metrics=metrics,
        extra={
            "bootstrap": True,
            "device": tm.device,
            "source": f"sklearn.datasets.load_digits rows 0..{n - 1}",
        },
    )
