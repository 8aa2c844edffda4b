"""The torch backend, on CUDA when a GPU is present and on the CPU otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.errors import ModelStoreError
from runtime.models import LocalModelStore, TorchModel, register_architecture, torch_available

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(
        not torch_available(), reason="torch extra not installed: pip install 'mlfn[torch]'"
    ),
]


@register_architecture("test-mlp")
def _mlp(hidden: int = 8) -> Any:
    from torch import nn

    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))


def test_roundtrip_in_safetensors_on_the_best_device(store: LocalModelStore) -> None:
    import torch

    torch.manual_seed(0)
    module = _mlp(hidden=5)
    store.publish("tiny", TorchModel("test-mlp", module, {"hidden": 5}), backend="torch")
    files = sorted(p.name for p in (store.root / "tiny" / "versions" / "1").iterdir())
    assert files == ["architecture.json", "meta.json", "weights.safetensors"]
    loaded = store.load("tiny").model
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert loaded.device == expected
    assert next(loaded.module.parameters()).device.type == expected
    x = torch.randn(6, 4)
    with torch.inference_mode():
        want = module(x)
        got = loaded.module(x.to(expected)).cpu()
    assert torch.allclose(want, got, atol=1e-5)


def test_unknown_architecture_and_wrong_weights_are_clear(store: LocalModelStore) -> None:
    store.publish("tiny", TorchModel("test-mlp", _mlp(8), {"hidden": 8}), backend="torch")
    path = store.root / "tiny" / "versions" / "1" / "architecture.json"
    with pytest.raises(ModelStoreError, match=r"no torch architecture named 'nope'.*test-mlp"):
        store.publish("tiny", TorchModel("nope", _mlp(8)), backend="torch")
    files = store.get_files("tiny", 1)
    files["architecture.json"] = b'{"architecture": "test-mlp", "config": {"hidden": 9}}'
    store.put("tiny", files, backend="torch")
    with pytest.raises(ModelStoreError, match="weights do not fit architecture 'test-mlp'"):
        store.load("tiny", 2)
    assert path.exists()
