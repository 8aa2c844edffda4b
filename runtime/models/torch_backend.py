"""The PyTorch backend: weights in safetensors, the architecture from code.

Install with the ``torch`` extra (``pip install 'mlfn[torch]'``); torch is imported only
when a torch model is published or loaded. A model is a :class:`TorchModel`: the name
of an architecture registered with :func:`register_architecture`, the JSON config that
builds it, and the module. Loading builds the module from code, reads the weights
(``strict=True``) and moves it to CUDA when ``torch.cuda.is_available()``, else the CPU.

Example:
    >>> @register_architecture("tiny-mlp")
    ... def tiny_mlp(hidden: int = 32) -> Any:
    ...     import torch.nn as nn
    ...     return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from runtime.errors import ModelStoreError

__all__ = ["TorchBackend", "TorchModel", "pick_device", "register_architecture", "torch_available"]

F = TypeVar("F", bound=Callable[..., Any])
_ARCHITECTURES: dict[str, Callable[..., Any]] = {}
_INSTALL = "the torch backend needs PyTorch and safetensors: pip install 'mlfn[torch]'"


def torch_available() -> bool:
    """True when torch and safetensors can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "safetensors"))


def pick_device() -> str:
    """``cuda`` when a GPU is visible to torch, ``cpu`` otherwise."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def register_architecture(name: str) -> Callable[[F], F]:
    """Register a factory ``f(**config) -> torch.nn.Module`` under ``name``."""

    def record(factory: F) -> F:
        _ARCHITECTURES[name] = factory
        return factory

    return record


@dataclass
class TorchModel:
    """A torch module with what rebuilds it: ``architecture(**config)``."""

    architecture: str
    module: Any
    config: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"


class TorchBackend:
    """Writes ``weights.safetensors`` and ``architecture.json``; never pickles."""

    name = "torch"
    WEIGHTS = "weights.safetensors"
    ARCH = "architecture.json"

    def __init__(self) -> None:
        if not torch_available():
            raise ModelStoreError(_INSTALL)

    def dump(self, model: Any) -> dict[str, bytes]:
        from safetensors.torch import save

        if not isinstance(model, TorchModel):
            raise ModelStoreError(
                f"the torch backend publishes a TorchModel(architecture, module, config), "
                f"got {type(model).__name__}"
            )
        if model.architecture not in _ARCHITECTURES:
            raise ModelStoreError(self._unknown(model.architecture))
        state = {k: v.detach().cpu().contiguous() for k, v in model.module.state_dict().items()}
        arch = {"architecture": model.architecture, "config": model.config}
        return {self.WEIGHTS: save(state), self.ARCH: json.dumps(arch).encode()}

    def load(self, files: Mapping[str, bytes]) -> TorchModel:
        from safetensors.torch import load

        try:
            arch = json.loads(files[self.ARCH])
            weights = files[self.WEIGHTS]
        except KeyError as err:
            raise ModelStoreError(
                f"torch model is missing {err}; found: {', '.join(files)}"
            ) from err
        factory = _ARCHITECTURES.get(arch["architecture"])
        if factory is None:
            raise ModelStoreError(self._unknown(arch["architecture"]))
        module = factory(**arch.get("config", {}))
        try:
            module.load_state_dict(load(weights), strict=True)
        except RuntimeError as err:
            raise ModelStoreError(
                f"weights do not fit architecture {arch['architecture']!r} with config "
                f"{arch.get('config')}: {err}"
            ) from err
        device = pick_device()
        module.to(device).eval()
        return TorchModel(arch["architecture"], module, dict(arch.get("config", {})), device)

    @staticmethod
    def _unknown(name: str) -> str:
        known = ", ".join(sorted(_ARCHITECTURES)) or "none"
        return (
            f"no torch architecture named {name!r} is registered (registered: {known}); "
            "import the module that defines it with @register_architecture before loading"
        )
