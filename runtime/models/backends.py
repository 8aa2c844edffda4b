"""Model backends: how a model becomes files and back, in safe formats only.

Nothing from the store is ever unpickled. scikit-learn models are written with skops
and read back only when every type in the file is on the trusted list; PyTorch models
(see :mod:`runtime.models.torch_backend`) are safetensors weights plus an architecture
that comes from code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from runtime.errors import ModelStoreError
from runtime.models.skopsio import skops_io

__all__ = [
    "DEFAULT_TRUSTED",
    "Backend",
    "SklearnBackend",
    "UnsafeModelError",
    "get_backend",
    "register_backend",
]

DEFAULT_TRUSTED: frozenset[str] = frozenset()
"""Types trusted beyond skops' own default list (scikit-learn estimators, numpy, builtins)."""


class UnsafeModelError(ModelStoreError):
    """A model file holds types that are not on the trusted list."""


class Backend(Protocol):
    """Turns a model into named files and back."""

    name: str

    def dump(self, model: Any) -> dict[str, bytes]:
        """The model as files (name -> bytes)."""

    def load(self, files: Mapping[str, bytes]) -> Any:
        """The model read back from the files :meth:`dump` wrote."""


class SklearnBackend:
    """scikit-learn through skops, with an explicit allowlist of trusted types.

    Args:
        trusted: fully qualified type names to trust on top of skops' defaults
            (which cover scikit-learn's own estimators).
    """

    name = "sklearn"
    FILE = "model.skops"

    def __init__(self, trusted: Iterable[str] = DEFAULT_TRUSTED) -> None:
        self.trusted = frozenset(trusted)

    def dump(self, model: Any) -> dict[str, bytes]:
        return {self.FILE: skops_io().dumps(model)}

    def load(self, files: Mapping[str, bytes]) -> Any:
        sio = skops_io()
        blob = files.get(self.FILE)
        if blob is None:
            raise ModelStoreError(
                f"sklearn model has no {self.FILE!r} (files: {', '.join(files) or 'none'})"
            )
        try:
            untrusted = sorted(sio.get_untrusted_types(data=blob))
        except Exception as err:  # skops raises zipfile/JSON errors on foreign bytes
            raise UnsafeModelError(
                f"{self.FILE} is not a skops file ({type(err).__name__}: {err}); "
                "mlfn never unpickles: publish the model with store.publish(..., backend='sklearn')"
            ) from err
        refused = [t for t in untrusted if t not in self.trusted]
        if refused:
            raise UnsafeModelError(
                f"model file holds types that are not trusted: {', '.join(refused)}; "
                "if you wrote this model and trust these types, register "
                "SklearnBackend(trusted=DEFAULT_TRUSTED | {...}) with register_backend()"
            )
        return sio.loads(blob, trusted=untrusted)


_BACKENDS: dict[str, Backend] = {"sklearn": SklearnBackend()}


def register_backend(backend: Backend) -> None:
    """Use ``backend`` for models published with ``backend=backend.name``."""
    _BACKENDS[backend.name] = backend


def get_backend(name: str) -> Backend:
    """The backend called ``name``; ``torch`` is created on first use (torch is optional)."""
    backend = _BACKENDS.get(name)
    if backend is None and name == "torch":
        from runtime.models.torch_backend import TorchBackend

        backend = _BACKENDS[name] = TorchBackend()
    if backend is None:
        raise ModelStoreError(
            f"no model backend named {name!r}; known: {', '.join(sorted({*_BACKENDS, 'torch'}))}"
        )
    return backend
