"""Models: a versioned store, safe backends, and the handle that hot-swaps a served model.

- :class:`ModelStore` / :class:`LocalModelStore`: atomic, versioned, with a ``latest`` pointer.
- Backends: scikit-learn via skops (trusted types only), PyTorch via safetensors (optional).
- :func:`open_model` / :class:`ModelHandle`: what the server uses to serve a model.
- :func:`register_bootstrap`: how a model gets its first version on a fresh clone.
"""

from runtime.models.backends import (
    DEFAULT_TRUSTED,
    Backend,
    SklearnBackend,
    UnsafeModelError,
    get_backend,
    register_backend,
)
from runtime.models.bootstrap import BootstrapHook, bootstrap_for, register_bootstrap
from runtime.models.handle import LoadedModel, ModelHandle, model_store, open_model
from runtime.models.store import LocalModelStore, ModelStore, ModelVersion
from runtime.models.torch_backend import (
    TorchModel,
    pick_device,
    register_architecture,
    torch_available,
)
from runtime.models.training import TrainResult, default_classifier, evaluate, train_classifier

__all__ = [
    "DEFAULT_TRUSTED",
    "Backend",
    "BootstrapHook",
    "LoadedModel",
    "LocalModelStore",
    "ModelHandle",
    "ModelStore",
    "ModelVersion",
    "SklearnBackend",
    "TorchModel",
    "TrainResult",
    "UnsafeModelError",
    "bootstrap_for",
    "default_classifier",
    "evaluate",
    "get_backend",
    "model_store",
    "open_model",
    "pick_device",
    "register_architecture",
    "register_backend",
    "register_bootstrap",
    "torch_available",
    "train_classifier",
]
